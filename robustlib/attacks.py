"""The one registry of attacks: adv_testing.py evaluates with it, vgg_training.py crafts its X_adv
with it, make_figures.py draws with it. Each entry wraps torchattacks (or the inner attacks of
TRADES and MART, adversarial_baselines.py) and is built by `build(name, model, eps, knobs)`.

The step size of the iterative attacks is never implied: Knobs.step gives it, and STEP_RULES names
each paper's rule for choosing it from eps and the number of steps:
    released  eps / steps        PC-LC's released notebook, its test attacks (MIM, PGD, BIM)
    madry     2.5 * eps / steps  Madry et al. (2018); training's default for PGD, MIM, TRADES, MART
    wong      1.25 * eps         Wong, Rice & Kolter (2020): the single step of FGSM-RS
    quarter   eps / 4            the PGD-10 that watches single-step training for a collapse
"""
from collections import namedtuple
from dataclasses import dataclass

import torch
import torchattacks as ta
from torch.nn import functional as F

from adversarial_baselines import fast_fgsm_adversary, fast_pgd_adversary, mart_adversary, trades_adversary

STEP_RULES = {"released": lambda eps, steps: eps / steps,
              "madry": lambda eps, steps: 2.5 * eps / steps,
              "wong": lambda eps, steps: 1.25 * eps,
              "quarter": lambda eps, steps: eps / 4}
RELEASED_STEPS = 10  # the PC-LC notebook's MIM / PGD iterations
SSC_STEP, SSC_STEPS, SSC_DECAY = 0.0078, 20, 0.9  # the title paper's released PGD / MIM (SSC-DM.py)
TARGETS = 9          # APGD-T / FAB-T target classes: the reference AutoAttack's standard version


@dataclass(frozen=True)
class Knobs:
    """What an attack reads besides the model and eps; an entry's `reads` names its fields."""
    steps: int = RELEASED_STEPS   # iterations of mim, pgd, bim, trades, mart
    step: float = 0.0             # their step size, and fgsm-rs's (a rule of STEP_RULES)
    decay: float = 1.0            # MIM's momentum decay (released evaluation 1.0)
    classes: int = 10             # classes of the task (targeted attacks take min(classes, TARGETS + 1))
    seed: int = 0                 # seed of the attacks that take one
    apgd_steps: int = 10
    apgd_restarts: int = 1
    fab_steps: int = 10
    fab_restarts: int = 1
    square_queries: int = 5000
    square_schedule: str = "rescaled"  # rescaled to the queries (torchattacks) or reference (fixed)
    spsa_iters: int = 1           # 128 samples each
    cw_steps: int = 50
    surrogate: str = ""           # the fingerprint of the network `transfer` crafts on (SURROGATES)
    norm: str = "linf"            # the threat model: linf or l2 (the entries of L2 have an L2 version)


def _pgd_restarts(model, eps, step, steps, restarts):
    """fast_adversarial's evaluation attack (MNIST/evaluate_mnist.py): `restarts` runs of PGD from a
    uniform start clipped to the image, each step moving only the samples still classified
    correctly (a run ends once none is), the delta of the largest cross-entropy kept per sample."""
    def run(x, y):
        shape = (-1,) + (1,) * (x.dim() - 1)
        best, best_loss = torch.zeros_like(x), torch.zeros(len(y), device=x.device, dtype=x.dtype)
        for _ in range(restarts):
            delta = torch.max(torch.min(torch.zeros_like(x).uniform_(-eps, eps), 1 - x), -x)
            for _ in range(steps):
                delta.requires_grad_(True)
                with torch.enable_grad():
                    out = model(x + delta)
                    live = out.argmax(1) == y
                    if not live.any():
                        break
                    grad, = torch.autograd.grad(F.cross_entropy(out, y), [delta])
                moved = torch.clamp(delta + step * torch.sign(grad), -eps, eps)
                delta = torch.where(live.view(shape), torch.max(torch.min(moved, 1 - x), -x), delta).detach()
            delta = delta.detach()
            with torch.no_grad():
                loss = F.cross_entropy(model(x + delta), y, reduction="none")
            better = (loss >= best_loss).view(shape)
            best, best_loss = torch.where(better, delta, best), torch.max(best_loss, loss)
        return torch.clamp(x + best, 0, 1)
    return run


def probability_margin(logits, y):
    """max_{j != y} p_j - p_y, p = softmax(logits): the gap the PC loss widens, as a loss to maximise
    (the Probability Margin Attack's loss, Xie et al., arXiv 2411.15210). Positive: misclassified."""
    p = torch.softmax(logits.float(), dim=1)
    true = p.gather(1, y[:, None])[:, 0]
    other = p.masked_fill(F.one_hot(y, p.shape[1]).bool(), float("-inf")).max(1).values
    return other - true


class _APGDMargin(ta.APGD):
    """torchattacks' APGD (its step-size schedule, momentum and restarts) on another per-sample loss."""

    def __init__(self, model, loss_fn, **kwargs):
        super().__init__(model, loss="dlr", **kwargs)  # "dlr": APGD calls self.dlr_loss
        self.loss_fn = loss_fn

    def dlr_loss(self, x, y):
        return self.loss_fn(x, y)


def distance(adv, x, norm):
    """Per-sample distance of adv from x in the threat model's norm (linf or l2)."""
    d = (adv - x).flatten(1)
    return d.abs().max(1).values if norm == "linf" else d.norm(dim=1)


def _project(delta, eps, norm):
    """delta into the eps ball of the norm."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    shape = (-1,) + (1,) * (delta.dim() - 1)
    return delta * torch.clamp(eps / (delta.flatten(1).norm(dim=1) + 1e-12), max=1.0).view(shape)


def _steepest(grad, norm):
    """The steepest-ascent direction of unit size in the norm: the sign (linf), the unit gradient (l2)."""
    if norm == "linf":
        return torch.sign(grad)
    return grad / (grad.flatten(1).norm(dim=1).view((-1,) + (1,) * (grad.dim() - 1)) + 1e-12)


def _into_ball(x, delta, eps, norm="linf"):
    """delta into the eps ball, and x + delta into the image [0, 1]."""
    return torch.max(torch.min(_project(delta, eps, norm), 1 - x), -x)


def _pull_targets(emb, logits, y):
    """Per sample, the mean embedding of the nearest other class in the batch and that class (a
    batch holding one class: the next class, and the sample's own mean)."""
    classes = y.unique()
    means = torch.stack([emb[y == c].mean(0) for c in classes])
    dist = torch.cdist(emb, means).masked_fill(classes[None, :] == y[:, None], float("inf"))
    nearest = dist.argmin(1)
    target = torch.where(torch.isinf(dist.min(1).values), (y + 1) % logits.shape[1], classes[nearest])
    return means[nearest], target


def _feature_pull(model, eps, k):
    """The feature-space attack aimed at SSC and RCC, which shape where each class sits in the
    embedding (or the logits): `apgd_steps` signed steps that pull each sample's embedding
    (model.embed, else the logits) toward the mean clean embedding of the nearest other class in the
    batch, then `apgd_steps` steps on that class's logit margin (z_t - z_y) from where the pull ended,
    from a seeded uniform start; a point misclassified at any step is the one returned (nothing fooled
    mid-run is lost). Step size eps / 4, halved at each phase's half and again at three quarters."""
    def outputs(x):  # (features, logits): one forward pass; this project's models are head(embed(x))
        if hasattr(model, "embed") and hasattr(model, "head"):
            emb = model.embed(x)
            return emb, model.head(emb)
        z = model(x)
        return z, z

    def run(x, y):
        with torch.no_grad():
            mu, target = _pull_targets(*outputs(x), y)
        delta = _into_ball(x, _random_delta(x, eps, k.seed, k.norm), eps, k.norm)
        best, fooled = x.clone(), torch.zeros(len(y), dtype=torch.bool, device=x.device)
        steps = k.apgd_steps
        for i in range(2 * steps + 1):
            delta.requires_grad_(True)
            with torch.enable_grad():
                emb, z = outputs(x + delta)
                if i < steps:
                    loss = -((emb - mu) ** 2).sum(1)
                else:
                    loss = z.gather(1, target[:, None])[:, 0] - z.gather(1, y[:, None])[:, 0]
                grad, = torch.autograd.grad(loss.sum(), [delta]) if i < 2 * steps else (None,)
            now = (z.argmax(1) != y) & ~fooled
            best[now], fooled = (x + delta)[now].detach(), fooled | now
            if grad is None:
                break
            phase = (i % steps) / steps
            alpha = eps / 4 * (0.5 if phase >= 0.5 else 1.0) * (0.5 if phase >= 0.75 else 1.0)
            delta = _into_ball(x, delta.detach() + alpha * _steepest(grad, k.norm), eps, k.norm)
        return torch.where(fooled.view((-1,) + (1,) * (x.dim() - 1)), best, x + delta.detach())
    return run


def _uniform(x, eps, seed, norm):
    """x plus seeded noise, clipped to the image: uniform in the linf ball; for l2, a uniform
    direction scaled to the sphere of radius eps."""
    return torch.clamp(x + _random_delta(x, eps, seed, norm), 0, 1)


def _random_delta(x, eps, seed, norm):
    """Seeded noise of x's shape: uniform in the linf ball; for l2, a uniform direction of length eps."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if norm == "linf":
        return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    return eps * _steepest(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype), "l2")


def _noise(eps, k):
    """Seeded noise in the eps ball, clipped to the image: the floor a real attack must beat."""
    return lambda x, y: _uniform(x, eps, k.seed, k.norm)


SURROGATES = {}  # fingerprint -> network: what `transfer` crafts its examples on (evaluation fills it)


def _transfer(eps, k):
    """APGD-CE run on the surrogate network; the attacked model only sees the result."""
    if k.surrogate not in SURROGATES:
        raise ValueError("the transfer attack needs a surrogate network: --surrogate=CHECKPOINT")
    return ta.APGD(SURROGATES[k.surrogate], norm=_TA[k.norm], eps=eps, steps=k.apgd_steps, n_restarts=k.apgd_restarts,
                   loss="ce", seed=k.seed)


def _within(attack, eps, norm):
    """CW-L2, a minimum-norm attack, as an attack in the eps ball: its perturbation projected into it."""
    def run(x, y):
        return x + _project(attack(x, y) - x, eps, norm)
    return run


_TA = {"linf": "Linf", "l2": "L2"}  # torchattacks' names of the norms


# white-box?, iterative?, costly (evaluation runs it on the N_STRONG subset)?, the Knobs fields it
# reads, build(model, eps, knobs) -> attack(x, y) -> x_adv
Attack = namedtuple("Attack", "white iterative costly reads build")
_ITER, _APGD, _FAB = ("steps", "step"), ("apgd_steps", "apgd_restarts", "seed"), ("fab_steps", "fab_restarts", "seed")
ATTACKS = {
    "fgsm": Attack(True, False, False, (), lambda m, e, k: ta.FGSM(m, eps=e)),
    # FGSM-RS as fast_adversarial trains with it (the uniform start not clipped to the image), and
    # torchattacks' FFGSM, which clips the start first: on MNIST's 0/1 pixels that start is mostly
    # plain FGSM's (the ablation fgsm-rs-clamped)
    "fgsm-rs": Attack(True, False, False, ("step",), lambda m, e, k: lambda x, y: fast_fgsm_adversary(
        m, x, y, e, k.step)),
    "fgsm-rs-clamped": Attack(True, False, False, ("step",), lambda m, e, k: ta.FFGSM(m, eps=e, alpha=k.step)),
    "mim": Attack(True, True, False, _ITER + ("decay",), lambda m, e, k: ta.MIFGSM(
        m, eps=e, alpha=k.step, steps=k.steps, decay=k.decay)),
    "pgd": Attack(True, True, False, _ITER, lambda m, e, k: ta.PGD(
        m, eps=e, alpha=k.step, steps=k.steps, random_start=True)),
    "bim": Attack(True, True, False, _ITER, lambda m, e, k: ta.BIM(m, eps=e, alpha=k.step, steps=k.steps)),
    # fast_adversarial's PGD mode: a step moves only the samples still classified correctly
    "pgd-es": Attack(True, True, False, _ITER, lambda m, e, k: lambda x, y: fast_pgd_adversary(
        m, x, y, e, k.step, k.steps)),
    "trades": Attack(True, True, False, _ITER, lambda m, e, k: lambda x, y: trades_adversary(
        m, x, k.step, e, k.steps)),
    "mart": Attack(True, True, False, _ITER, lambda m, e, k: lambda x, y: mart_adversary(
        m, x, y, k.step, e, k.steps)),
    # the title paper's released attacks at any eps: 20 steps of 0.0078, MIM decay 0.9 (its training
    # attacks, which its script also tests with)
    "ssc-pgd": Attack(True, True, False, (), lambda m, e, k: ta.PGD(
        m, eps=e, alpha=SSC_STEP, steps=SSC_STEPS, random_start=True)),
    "ssc-mim": Attack(True, True, False, (), lambda m, e, k: ta.MIFGSM(
        m, eps=e, alpha=SSC_STEP, steps=SSC_STEPS, decay=SSC_DECAY)),
    # fast_adversarial's MNIST evaluation: PGD-50 of step 0.01, 10 restarts (its README's numbers)
    "pgd-50x10": Attack(True, True, False, (), lambda m, e, k: _pgd_restarts(m, e, 0.01, 50, 10)),
    "cw": Attack(True, True, True, ("cw_steps",), lambda m, e, k: _within(
        ta.CW(m, c=1, kappa=0, steps=k.cw_steps, lr=0.01), e, k.norm)),
    "spsa": Attack(False, True, True, ("spsa_iters",), lambda m, e, k: ta.SPSA(
        m, eps=e, delta=0.01, lr=0.01, nb_iter=k.spsa_iters, nb_sample=128, max_batch_size=64)),
    "square": Attack(False, True, True, ("square_queries", "square_schedule", "seed"), lambda m, e, k: ta.Square(
        m, norm=_TA[k.norm], eps=e, n_queries=k.square_queries, n_restarts=1, seed=k.seed,
        resc_schedule=k.square_schedule == "rescaled")),
    "apgd-ce": Attack(True, True, True, _APGD, lambda m, e, k: ta.APGD(
        m, norm=_TA[k.norm], eps=e, steps=k.apgd_steps, n_restarts=k.apgd_restarts, loss="ce", seed=k.seed)),
    "apgd-t": Attack(True, True, True, _APGD + ("classes",), lambda m, e, k: ta.APGDT(
        m, norm=_TA[k.norm], eps=e, steps=k.apgd_steps, n_restarts=k.apgd_restarts,
        n_classes=min(k.classes, TARGETS + 1), seed=k.seed)),
    "fab-t": Attack(True, True, True, _FAB + ("classes",), lambda m, e, k: ta.FAB(
        m, norm=_TA[k.norm], eps=e, steps=k.fab_steps, n_restarts=k.fab_restarts, multi_targeted=True,
        n_classes=min(k.classes, TARGETS + 1), seed=k.seed)),
    # adaptive: APGD on the defense's own objective. The probability margin is the gap PC + LC
    # trains to widen; DLR, the logit margin rescaled by the spread of the top logits, is blind to the
    # logits' scale, which the logit constraints shape
    "apgd-pm": Attack(True, True, True, _APGD, lambda m, e, k: _APGDMargin(
        m, probability_margin, norm=_TA[k.norm], eps=e, steps=k.apgd_steps, n_restarts=k.apgd_restarts, seed=k.seed)),
    "apgd-dlr": Attack(True, True, True, _APGD, lambda m, e, k: ta.APGD(
        m, norm=_TA[k.norm], eps=e, steps=k.apgd_steps, n_restarts=k.apgd_restarts, loss="dlr", seed=k.seed)),
    # for SSC and RCC: pull the embedding toward the nearest other class, then its logit margin
    "feature-pull": Attack(True, True, True, ("apgd_steps", "seed"), lambda m, e, k: _feature_pull(m, e, k)),
    # not an attack: the floor (a real attack that does worse than noise is broken; evaluation's
    # black-box check says so, since noise reads no gradient)
    "noise": Attack(False, False, False, ("seed",), lambda m, e, k: _noise(e, k)),
    # transfer: APGD-CE on another network (a black-box row, so the black-box check warns when it
    # beats the white-box attacks on the model itself)
    "transfer": Attack(False, True, True, _APGD + ("surrogate",), lambda m, e, k: _transfer(e, k)),
}
TRAINING_ONLY = ("fgsm-rs", "fgsm-rs-clamped", "pgd-es", "trades", "mart")  # training's inner attacks: adv_testing.py does not offer them
SUITES = {"released": ["fgsm", "mim", "pgd", "spsa"],           # the PC-LC notebook's set
          "autoattack": ["apgd-ce", "apgd-t", "fab-t", "square"],  # Croce & Hein's standard version
          "adaptive": ["apgd-pm", "apgd-dlr", "feature-pull"]}        # aimed at the defenses' objectives
# AutoAttack standard as one cascade (each attack only on what the previous ones left)
ATTACKS["autoattack-cascade"] = Attack(
    True, True, True, tuple(dict.fromkeys(f for a in SUITES["autoattack"] for f in ATTACKS[a].reads)),
    lambda m, e, k: ta.MultiAttack([ATTACKS[a].build(m, e, k) for a in SUITES["autoattack"]]))


# --norm=l2: the entries with an L2 version (the others have none: FGSM and PGD take their L2 form
# here, torchattacks' FGM / PGD-L2; the rest read knobs.norm themselves)
L2 = {"fgsm": lambda m, e, k: ta.PGDL2(m, eps=e, alpha=e, steps=1, random_start=False),
      "pgd": lambda m, e, k: ta.PGDL2(m, eps=e, alpha=k.step, steps=k.steps, random_start=True),
      **{name: ATTACKS[name].build for name in ("cw", "square", "apgd-ce", "apgd-t", "fab-t", "apgd-pm", "apgd-dlr",
                                                "feature-pull", "noise", "transfer")}}


def build(name, model, eps, knobs):
    """attack(x, y) -> x_adv for the registry entry `name` at radius eps in knobs.norm."""
    if knobs.norm == "l2":
        if name not in L2:
            raise ValueError(f"{name} has no L2 version: the L2 ones are {', '.join(L2)}")
        return L2[name](model, eps, knobs)
    return ATTACKS[name].build(model, eps, knobs)


def suite(name, norm="linf"):
    """A suite's attacks in the threat model: under l2, those with an L2 version."""
    return [a for a in SUITES[name] if norm == "linf" or a in L2]


def key_material(name, knobs):
    """The knobs attack `name` reads, as a dict (the part of a cache key that the attack decides;
    the norm only where it is not linf, so linf keys stay as they were)."""
    material = {field: getattr(knobs, field) for field in ATTACKS[name].reads}
    return material if knobs.norm == "linf" else dict(material, norm=knobs.norm)
