"""The field's adversarial-training baselines that a defense is compared against: the objectives of
TRADES and MART, and the training attacks of fast adversarial training (FGSM-RS) and its PGD mode.

TRADES: Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
ICML 2019 (code yaodongyu/TRADES). MART: Wang et al., "Improving Adversarial Robustness Requires
Revisiting Misclassified Examples", ICLR 2020 (code YisenWang/MART).

With logits z = f(x) on natural images, z' = f(x') on adversarial ones, p = softmax(z),
p' = softmax(z'), labels y, batch size B:

    TRADES:  L = CE(z, y) + beta * 1/B * sum_i KL(p_i || p'_i),   KL(p || q) = sum_j p_j log(p_j / q_j)

    MART:    y'_i = the most probable class of p'_i other than y_i
             BCE  = CE(z', y) + 1/B * sum_i -log(1.0001 - p'_{i,y'_i} + 1e-12)
             L    = BCE + beta * 1/B * sum_i [sum_j p_ij log(p_ij / (p'_ij + 1e-12))] * (1.0000001 - p_{i,y_i})

`trades_objective` and `mart_objective` compute L from the two batches of logits.
`trades_loss` and `mart_loss` have the official repositories' signatures and behaviour: they craft
x' themselves (x + 0.001 N(0, I), then `perturb_steps` signed-gradient steps of `step_size`, each
projected to the `epsilon` ball and to [0, 1]; TRADES ascends the KL term, MART the cross-entropy),
with the model in eval mode, and return L computed in train mode. Code written for those
repositories runs unchanged with this file, on any device:

    from adversarial_baselines import trades_loss
    loss = trades_loss(model, x, y, optimizer, step_size=0.01, epsilon=0.3, perturb_steps=40, beta=1.0)
    loss.backward(); optimizer.step()

`fast_fgsm_adversary` and `fast_pgd_adversary` are the training attacks of Wong, Rice & Kolter,
"Fast is better than free: Revisiting adversarial training", ICLR 2020 (code
locuslab/fast_adversarial, MNIST/train_mnist.py), step for step: FGSM-RS takes its gradient at
x + delta with delta ~ U(-eps, eps) *not* clipped to [0, 1] (torchattacks' FFGSM clips the start
first, a different attack), then delta <- clip(delta + alpha sign(grad), -eps, eps), clipped so that
x + delta lies in [0, 1]; its PGD mode starts from that uniform delta clipped to the image, moves
delta only for the samples the model still classifies correctly, and steps on the sign of the
gradients summed over its iterations (the released loop never zeroes delta.grad). Both leave the model in the mode
it is in (the released script trains in train mode) and draw from torch's global generator:

    x_adv = fast_fgsm_adversary(model, x, y, epsilon=0.3, alpha=0.375)
    loss = F.cross_entropy(model(x_adv), y)

This file imports nothing but torch: copy it into your project as it is.
"""
import torch
from torch.nn import functional as F

__all__ = ["trades_objective", "mart_objective", "trades_adversary", "mart_adversary", "trades_loss", "mart_loss",
           "fast_fgsm_adversary", "fast_pgd_adversary"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_logits(logits_natural, logits_adv, target, beta, reduction):
    for name, z in (("logits_natural", logits_natural), ("logits_adv", logits_adv)):
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or not z.is_floating_point():
            what = f"{z.dtype} tensor of shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"{name} must be a 2-D floating-point tensor (batch x classes), got {what}")
    if logits_natural.shape != logits_adv.shape:
        raise ValueError(f"logits_natural and logits_adv differ in shape: {tuple(logits_natural.shape)} "
                         f"and {tuple(logits_adv.shape)}")
    if logits_natural.shape[1] < 2:
        raise ValueError(f"logits need at least 2 classes, got {logits_natural.shape[1]}")
    if (not isinstance(target, torch.Tensor) or target.dim() != 1 or target.is_floating_point()
            or target.dtype == torch.bool or target.shape[0] != logits_natural.shape[0]):
        what = f"{target.dtype} tensor of shape {tuple(target.shape)}" if isinstance(
            target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must be a 1-D integer tensor of {logits_natural.shape[0]} class indices, got {what}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits_natural.shape[1]):
        raise ValueError(f"target holds a label outside [0, {logits_natural.shape[1]})")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not beta >= 0:
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(per_sample, reduction):
    if reduction == "none":
        return per_sample
    return per_sample.sum() / (max(per_sample.shape[0], 1) if reduction == "mean" else 1)


def _kl_rows(logits_p, logits_q):
    """Per row: KL(softmax(logits_p) || softmax(logits_q)), 0 * log 0 taken as 0."""
    log_p, log_q = F.log_softmax(logits_p, dim=1), F.log_softmax(logits_q, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def trades_objective(logits_natural, logits_adv, target, beta=6.0, reduction="mean", logits_natural_kl=None):
    """TRADES: CE(z, y) + beta * KL(p || p') per sample, reduced ('mean' is the papers' L).
    beta 6 is the CIFAR setting; TRADES' MNIST script uses 1. logits_natural_kl: f(x) of another
    forward pass for p in the KL term (the official code runs f(x) again, after f(x'): with dropout
    or batch norm in train mode the two passes differ); by default logits_natural."""
    if logits_natural_kl is None:
        logits_natural_kl = logits_natural
    _check_logits(logits_natural, logits_adv, target, beta, reduction)
    _check_logits(logits_natural_kl, logits_adv, target, beta, reduction)
    per_sample = (F.cross_entropy(logits_natural, target, reduction="none")
                  + beta * _kl_rows(logits_natural_kl, logits_adv))
    return _reduce(per_sample, reduction)


def mart_objective(logits_natural, logits_adv, target, beta=6.0, reduction="mean"):
    """MART: the boosted cross-entropy on x' plus beta times the KL term weighted by
    1.0000001 - p_y (the natural probability of the true class), per sample, reduced."""
    _check_logits(logits_natural, logits_adv, target, beta, reduction)
    index = target.long().view(-1, 1)
    prob, prob_adv = F.softmax(logits_natural, dim=1), F.softmax(logits_adv, dim=1)
    # y' as the official code picks it, from the two most probable classes by torch.argsort: where
    # classes tie (SmallCNN's zero-initialised last layer makes all ten tie at the first batch) the
    # choice, and with it the gradient, follows argsort's order
    top2 = torch.argsort(prob_adv.detach(), dim=1)[:, -2:]
    other = torch.where(top2[:, -1] == target, top2[:, -2], top2[:, -1]).view(-1, 1)
    boosted = (F.cross_entropy(logits_adv, target, reduction="none")
               - torch.log(1.0001 - prob_adv.gather(1, other).squeeze(1) + 1e-12))
    kl = (torch.xlogy(prob, prob) - prob * torch.log(prob_adv + 1e-12)).sum(dim=1)
    per_sample = boosted + beta * kl * (1.0000001 - prob.gather(1, index).squeeze(1))
    return _reduce(per_sample, reduction)


def _check_attack(x_natural, y, step_size, epsilon, perturb_steps, beta, distance, distances):
    if not isinstance(x_natural, torch.Tensor) or not x_natural.is_floating_point() or x_natural.dim() < 2:
        raise ValueError("x_natural must be a floating-point tensor of images (batch first)")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x_natural.shape[0]:
        raise ValueError(f"y must be a 1-D tensor of {x_natural.shape[0]} labels")
    for name, value in (("step_size", step_size), ("epsilon", epsilon), ("beta", beta)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not isinstance(perturb_steps, int) or isinstance(perturb_steps, bool) or perturb_steps < 0:
        raise ValueError(f"perturb_steps must be a whole number >= 0, got {perturb_steps!r}")
    if distance not in distances:
        raise ValueError(f"distance must be one of {distances}, got {distance!r}")


def _linf_steps(x_natural, start, loss_of, step_size, epsilon, steps):
    """Signed-gradient ascent of loss_of(x') from `start`, each step projected to the eps ball
    around x_natural and to [0, 1]."""
    x_adv = start
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(loss_of(x_adv), [x_adv])
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon).clamp(0.0, 1.0)
    return x_adv.detach()


def _noise(x):
    # drawn by the CPU generator and moved, as the official code does (torch.randn(shape).cuda())
    return 0.001 * torch.randn(x.shape).to(x.device, x.dtype)


def trades_adversary(model, x_natural, step_size=0.003, epsilon=0.031, perturb_steps=10, distance="l_inf"):
    """TRADES' x': ascent of KL(f(x) || f(x')) from x + 0.001 N(0, I), the model in eval mode
    (its mode is restored after); distance 'l_inf' (signed steps), or 'l_2' (SGD on a normalised
    delta, as the official code). Returned detached, in the ball and in [0, 1]."""
    _check_attack(x_natural, torch.zeros(len(x_natural)), step_size, epsilon, perturb_steps, 0.0, distance,
                  ("l_inf", "l_2"))
    batch, was_training = len(x_natural), model.training
    model.eval()
    with torch.no_grad():
        target_logits = model(x_natural)

    def kl_sum(x_adv):
        return _kl_rows(target_logits, model(x_adv)).sum()

    if distance == "l_inf":
        x_adv = _linf_steps(x_natural, x_natural.detach() + _noise(x_natural), kl_sum, step_size, epsilon,
                            perturb_steps)
    else:
        delta = _noise(x_natural).requires_grad_(True)
        step = torch.optim.SGD([delta], lr=epsilon / max(perturb_steps, 1) * 2)
        for _ in range(perturb_steps):
            step.zero_grad()
            with torch.enable_grad():
                (-kl_sum(x_natural + delta)).backward()
            norms = delta.grad.view(batch, -1).norm(p=2, dim=1)
            delta.grad.div_(norms.view(-1, *[1] * (x_natural.dim() - 1)))
            if (norms == 0).any():
                delta.grad[norms == 0] = torch.randn_like(delta.grad[norms == 0])
            step.step()
            with torch.no_grad():
                delta.add_(x_natural).clamp_(0, 1).sub_(x_natural)
                delta.renorm_(p=2, dim=0, maxnorm=epsilon)
        x_adv = (x_natural + delta).detach()
    model.train(was_training)
    return x_adv.clamp(0.0, 1.0)


def mart_adversary(model, x_natural, y, step_size=0.007, epsilon=0.031, perturb_steps=10):
    """MART's x': cross-entropy ascent from x + 0.001 N(0, I) in signed L-inf steps, the model in
    eval mode (its mode is restored after). Returned detached, in the ball and in [0, 1]."""
    _check_attack(x_natural, y, step_size, epsilon, perturb_steps, 0.0, "l_inf", ("l_inf",))
    was_training = model.training
    model.eval()
    x_adv = _linf_steps(x_natural, x_natural.detach() + _noise(x_natural),
                        lambda x_adv: F.cross_entropy(model(x_adv), y), step_size, epsilon, perturb_steps)
    model.train(was_training)
    return x_adv.clamp(0.0, 1.0)


def trades_loss(model, x_natural, y, optimizer, step_size=0.003, epsilon=0.031, perturb_steps=10,
                beta=1.0, distance="l_inf"):
    """The official TRADES training loss: crafts x' (trades_adversary), zeroes the optimizer's
    gradients, and returns CE(f(x), y) + beta * KL(f(x) || f(x')) / B in train mode. As in the
    official code f(x) is evaluated twice in train mode (for CE and inside the KL)."""
    _check_attack(x_natural, y, step_size, epsilon, perturb_steps, beta, distance, ("l_inf", "l_2"))
    batch = len(x_natural)
    x_adv = trades_adversary(model, x_natural, step_size, epsilon, perturb_steps, distance)
    model.train()
    optimizer.zero_grad()
    # the official order of the three train-mode passes (dropout draws, batch-norm statistics)
    return trades_objective(model(x_natural), model(x_adv), y, beta=float(beta), logits_natural_kl=model(x_natural))


def mart_loss(model, x_natural, y, optimizer, step_size=0.007, epsilon=0.031, perturb_steps=10,
              beta=6.0, distance="l_inf"):
    """The official MART training loss: crafts x' in eval mode (cross-entropy ascent from
    x + 0.001 N(0, I), L-inf), zeroes the optimizer's gradients and returns mart_objective on
    f(x), f(x') in train mode. The official code implements only distance 'l_inf'."""
    _check_attack(x_natural, y, step_size, epsilon, perturb_steps, beta, distance, ("l_inf",))
    x_adv = mart_adversary(model, x_natural, y, step_size, epsilon, perturb_steps)
    model.train()
    optimizer.zero_grad()
    return mart_objective(model(x_natural), model(x_adv), y, beta=float(beta))


def _ce_grad(model, x_adv, y):
    """(logits, gradient of the cross-entropy) at x_adv."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        grad, = torch.autograd.grad(F.cross_entropy(logits, y), [x_adv])
    return logits.detach(), grad


def _into_image(x, delta):
    """delta clipped so that x + delta lies in [0, 1]."""
    return torch.max(torch.min(1 - x, delta), -x)


def fast_fgsm_adversary(model, x, y, epsilon=0.3, alpha=0.375):
    """FGSM-RS as fast_adversarial trains with it: the gradient at x + delta, delta ~ U(-eps, eps)
    not clipped to the image; one signed step of alpha, clipped to the ball, then to [0, 1]."""
    _check_attack(x, y, alpha, epsilon, 1, 0.0, "l_inf", ("l_inf",))
    delta = torch.zeros_like(x).uniform_(-epsilon, epsilon)
    _, grad = _ce_grad(model, x + delta, y)
    delta = _into_image(x, torch.clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon))
    return torch.clamp(x + delta, 0, 1).detach()


def fast_pgd_adversary(model, x, y, epsilon=0.3, alpha=0.01, attack_iters=40):
    """fast_adversarial's PGD training attack: delta ~ U(-eps, eps) clipped to the image, then
    attack_iters signed steps of alpha, each moving only the samples classified correctly at the
    current delta (a per-sample early stop), projected to the ball and to [0, 1]. The step's sign is
    that of the gradients summed over the iterations so far, as in MNIST/train_mnist.py, which never
    zeroes delta.grad (its evaluate_mnist.py does)."""
    _check_attack(x, y, alpha, epsilon, attack_iters, 0.0, "l_inf", ("l_inf",))
    delta = _into_image(x, torch.zeros_like(x).uniform_(-epsilon, epsilon))
    total = torch.zeros_like(x)
    for _ in range(attack_iters):
        logits, grad = _ce_grad(model, x + delta, y)
        total = total + grad  # the released loop never zeroes delta.grad: it steps on the running sum
        moved = _into_image(x, torch.clamp(delta + alpha * torch.sign(total), -epsilon, epsilon))
        correct = (logits.argmax(1) == y).view(-1, *[1] * (x.dim() - 1))
        delta = torch.where(correct, moved, delta)
    return torch.clamp(x + delta, 0, 1).detach()
