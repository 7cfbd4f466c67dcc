"""The baselines' training steps against their released code, re-stated here from its facts: the
project's step (vgg_training's objective, the attack registry, optimiser and schedule of the preset)
and the released one run on the same network, batches, seed and random draws, in float64; the
weights after a few optimiser steps agree to 1e-10.

- FGSM-RS: locuslab/fast_adversarial MNIST/train_mnist.py (--attack fgsm): delta ~ U(-eps, eps) not
  clipped to the image for the gradient, one step of alpha, Adam with the cyclic rate set before
  each batch at np.interp(epoch + (i + 1) / batches, [0, 2E // 5, E], [0, lr_max, 0]).
- PGD-AT as fast_adversarial trains it (--attack pgd): the start clipped to the image, each step
  moving only the samples classified correctly.
- PGD-AT as Madry et al. train it (and TRADES' repository's PGD): x + U(-eps, eps) clipped to [0, 1],
  every sample moved each step, projected to the ball and [0, 1], the attack in eval mode; SGD.
- TRADES (yaodongyu/TRADES train_trades_mnist.py + trades.py) and MART (YisenWang/MART mart.py) on
  SmallCNN with its dropout: x' in eval mode from x + 0.001 N(0, I), then TRADES' three train-mode
  passes f(x), f(x'), f(x) and MART's two, f(x), f(x'); TRADES' learning-rate steps.
- SSC-DM (JunzMiao/SSC-DM run_scripts/SSC-DM.py train_epoch): its FGSM in train mode, the weighted
  cross-entropies and lambda times the structural term on the logits; SGD with weight decay.
Each test also fails when one released fact is changed (the broken-fact checks inside them)."""
import os
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vgg_training  # noqa: E402
from robustlib import training  # noqa: E402
from robustlib.cli import parse_settings  # noqa: E402
from models import build_model  # noqa: E402

BATCHES, BATCH = 4, 10


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def settings(preset, *more):
    s, _ = parse_settings(vgg_training.settings_of(vars(vgg_training)), [f"--preset={preset}", *more],
                          vgg_training.PRESETS)
    return s


def data(seed=3):
    """MNIST-like batches: most pixels exactly 0 (where clipping the start matters), some at 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCHES * BATCH, 1, 28, 28, generator=g)
    x = torch.where(x < 0.7, torch.zeros_like(x), torch.where(x > 0.9, torch.ones_like(x), x))
    y = torch.randint(0, 10, (BATCHES * BATCH,), generator=g)
    return x.split(BATCH), y.split(BATCH)


def network(name, seed=0):
    torch.manual_seed(seed)
    return build_model(name, 1, 28, 10).double()


def project_steps(s, model, xs, ys, epochs_of_schedule=2):
    """The project's training loop for these batches: its objective, attack, optimiser and schedule
    (a phase of `epochs_of_schedule` epochs of len(xs) batches)."""
    net = training.WithEmbedding(model)
    attack = training.make_attack(model, 10, s)
    criterion = training.phase_loss(s["LOSS"], s["MARGIN"], s["LC_WEIGHT"])
    optimizer = training.make_optimizer(model, s)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: training.SCHEDULES[s["SCHEDULE"]](
        t, len(xs), epochs_of_schedule, s))
    struct = training.structure_term(s)
    torch.manual_seed(11)
    for x, y in zip(xs, ys):
        model.train()
        loss, _, _ = training.train_step(net, (x, y), criterion, attack, struct, s, training.nullcontext())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model


def fast_adversarial_fgsm_delta(model, X, y, eps, alpha, clamp_start):
    """train_mnist.py's FGSM delta: a uniform start, one signed step, projected to the ball and [0, 1]."""
    if clamp_start:  # the ablation: torchattacks' FFGSM (N(0, 1) drawn, overwritten by
        delta = torch.randn_like(X).uniform_(-eps, eps)  # U(-eps, eps)) clips the start first
        delta = torch.clamp(X + delta, 0, 1) - X
    else:
        delta = torch.zeros_like(X).uniform_(-eps, eps)
    delta.requires_grad = True
    loss = F.cross_entropy(model(X + delta), y)
    loss.backward()
    grad = delta.grad.detach()
    delta.data = torch.clamp(delta + alpha * torch.sign(grad), -eps, eps)
    delta.data = torch.max(torch.min(1 - X, delta.data), 0 - X)
    return delta.detach()


def fast_adversarial_pgd_delta(model, opt, X, y, eps, alpha, iters, zero_delta_grad):
    """train_mnist.py's PGD delta: only the samples still classified correctly move at each step."""
    delta = torch.zeros_like(X).uniform_(-eps, eps)
    delta.data = torch.max(torch.min(1 - X, delta.data), 0 - X)
    for _ in range(iters):
        delta.requires_grad = True
        output = model(X + delta)
        loss = F.cross_entropy(output, y)
        opt.zero_grad()
        loss.backward()
        grad = delta.grad.detach()
        index = output.max(1)[1] == y
        delta.data[index] = torch.clamp(delta + alpha * torch.sign(grad), -eps, eps)[index]
        delta.data[index] = torch.max(torch.min(1 - X, delta.data), 0 - X)[index]
        if zero_delta_grad:  # not released: train_mnist.py lets delta.grad accumulate
            delta.grad.zero_()
    return delta.detach()


def fast_adversarial_steps(model, xs, ys, attack, eps, alpha, lr_max, epochs, iters=40, cyclic=True,
                           clamp_start=False, zero_delta_grad=False):
    """train_mnist.py's loop over these batches as epoch 0 of `epochs` (facts: spec of the released code)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr_max)
    schedule = (lambda t: np.interp([t], [0, epochs * 2 // 5, epochs], [0, lr_max, 0])[0]) if cyclic \
        else (lambda t: lr_max)
    torch.manual_seed(11)
    for i, (X, y) in enumerate(zip(xs, ys)):
        opt.param_groups[0].update(lr=schedule(0 + (i + 1) / len(xs)))
        if attack == "fgsm":
            delta = fast_adversarial_fgsm_delta(model, X, y, eps, alpha, clamp_start)
        else:
            delta = fast_adversarial_pgd_delta(model, opt, X, y, eps, alpha, iters, zero_delta_grad)
        output = model(torch.clamp(X + delta, 0, 1))
        loss = F.cross_entropy(output, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def madry_steps(model, xs, ys, eps, alpha, iters, lr, momentum):
    """PGD-AT as Madry et al. (and TRADES' repository) train: a uniform start clipped to [0, 1],
    every sample stepped, the attack in eval mode, the loss in train mode; SGD with momentum."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    torch.manual_seed(11)
    for X, y in zip(xs, ys):
        model.eval()
        x_adv = torch.clamp(X + torch.empty_like(X).uniform_(-eps, eps), 0, 1)
        for _ in range(iters):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), [x_adv])
            x_adv = torch.clamp(X + torch.clamp(x_adv.detach() + alpha * grad.sign() - X, -eps, eps), 0, 1)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def max_difference(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def fgsm_rs_pair(adv_train="fgsm-rs", clamp_start=False):
    s = settings("fgsm-rs-mnist", f"--adv_train={adv_train}", "--epochs=2")
    xs, ys = data()
    ours = project_steps(s, network("wong-mnist"), xs, ys, epochs_of_schedule=s["EPOCHS"])
    theirs = fast_adversarial_steps(network("wong-mnist"), xs, ys, "fgsm", s["ADV_EPS"], s["ADV_STEP_SIZE"], s["LR"],
                                    s["EPOCHS"], clamp_start=clamp_start)
    return ours, theirs


def test_fgsm_rs_step_is_fast_adversarials():
    ours, theirs = fgsm_rs_pair()
    assert max_difference(ours, network("wong-mnist")) > 1e-3  # it trained
    assert max_difference(ours, theirs) < 1e-10


def test_fgsm_rs_clamped_is_the_clipped_start():
    """The ablation fgsm-rs-clamped (torchattacks' FFGSM) is the released step with the start
    clipped to the image, and differs from the released step."""
    ours, theirs = fgsm_rs_pair("fgsm-rs-clamped", clamp_start=True)
    assert max_difference(ours, theirs) < 1e-10
    released, _ = fgsm_rs_pair()
    assert max_difference(ours, released) > 1e-4


def test_fgsm_rs_released_facts_break_the_match():
    """Changing one released fact on the reference side (the start clipped; the rate read at i, not
    i + 1; a flat rate) must break the agreement."""
    s = settings("fgsm-rs-mnist", "--epochs=2")
    xs, ys = data()
    ours = project_steps(s, network("wong-mnist"), xs, ys, epochs_of_schedule=2)
    args = (xs, ys, "fgsm", s["ADV_EPS"], s["ADV_STEP_SIZE"], s["LR"], 2)
    for change in (dict(clamp_start=True), dict(cyclic=False)):
        assert max_difference(ours, fast_adversarial_steps(network("wong-mnist"), *args, **change)) > 1e-6
    assert max_difference(ours, fast_adversarial_steps(network("wong-mnist"), *args[:-1], 3)) > 1e-6


def test_cyclic_schedule_is_np_interp():
    s = settings("fgsm-rs-mnist")
    for epochs, steps in ((10, 7), (3, 5), (1, 4), (7, 3)):
        for t in range(epochs * steps):
            want = np.interp([(t + 1) / steps], [0, epochs * 2 // 5, epochs], [0, 1, 0])[0]
            assert training.SCHEDULES["cyclic"](t, steps, epochs, s) == pytest.approx(want, abs=1e-12)


def test_pgd_es_step_is_fast_adversarials_pgd_mode():
    s = settings("fgsm-rs-mnist", "--adv_train=pgd-es", "--adv_steps=5", "--adv_step_size=0.1",
                 "--schedule=multistep", "--milestones=", "--lr=1e-3")
    xs, ys = data()
    ours = project_steps(s, network("wong-mnist"), xs, ys)
    theirs = fast_adversarial_steps(network("wong-mnist"), xs, ys, "pgd", 0.3, 0.1, 1e-3, 2, iters=5, cyclic=False)
    assert max_difference(ours, theirs) < 1e-10
    fresh = fast_adversarial_steps(network("wong-mnist"), xs, ys, "pgd", 0.3, 0.1, 1e-3, 2, iters=5, cyclic=False,
                                   zero_delta_grad=True)
    assert max_difference(ours, fresh) > 1e-6  # the summed gradient is a released fact
    # the per-sample early stop matters: every sample stepped is another procedure (Madry's)
    madry = madry_steps(network("wong-mnist"), xs, ys, 0.3, 0.1, 5, 1e-3, 0.0)
    assert max_difference(ours, madry) > 1e-6


def test_pgd_at_step_is_madrys():
    s = settings("pgd-at-mnist", "--adv_steps=3", "--adv_step_size=0.1")
    xs, ys = data()
    ours = project_steps(s, network("smallcnn"), xs, ys)
    theirs = madry_steps(network("smallcnn"), xs, ys, 0.3, 0.1, 3, s["LR"], s["MOMENTUM"])
    assert max_difference(ours, network("smallcnn")) > 1e-4
    assert max_difference(ours, theirs) < 1e-10


def released_evaluation_pgd(model, X, y, epsilon, alpha, attack_iters, restarts):
    """MNIST/evaluate_mnist.py's attack_pgd, re-stated (its delta.grad zeroed each step)."""
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    for _ in range(restarts):
        delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
        delta.data = torch.max(torch.min(delta, 1 - X), 0 - X)
        delta.requires_grad = True
        for _ in range(attack_iters):
            output = model(X + delta)
            index = torch.where(output.max(1)[1] == y)[0]
            if len(index) == 0:
                break
            loss = F.cross_entropy(output, y)
            loss.backward()
            grad = delta.grad.detach()
            d = torch.clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon)
            d = torch.max(torch.min(d, 1 - X), 0 - X)
            delta.data[index] = d[index]
            delta.grad.zero_()
        all_loss = F.cross_entropy(model(X + delta), y, reduction="none")
        max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
        max_loss = torch.max(max_loss, all_loss)
    return max_delta


def test_pgd_50x10_is_fast_adversarials_evaluation():
    from robustlib import attacks
    model = network("wong-mnist").eval()
    xs, ys = data()
    x = torch.cat(xs[:2])
    y = model(x).argmax(1)  # all correct: the attack must fool some
    torch.manual_seed(5)
    ours = attacks.build("pgd-50x10", model, 0.3, attacks.Knobs())(x, y)
    torch.manual_seed(5)
    theirs = torch.clamp(x + released_evaluation_pgd(model, x, y, 0.3, 0.01, 50, 10), 0, 1)
    assert (ours - theirs).abs().max().item() < 1e-10
    assert (model(ours).argmax(1) == y).float().mean() < 1
    assert (ours - x).abs().max() <= 0.3 + 1e-12 and 0 <= ours.min() and ours.max() <= 1


def released_inner_max(kind, model, X, y, eps, alpha, iters):
    """x' from x + 0.001 N(0, I) (the CPU generator), `iters` signed steps in eval mode (TRADES ascends
    sum_i KL(p(x) || p(x')), MART the cross-entropy), projected to the ball and [0, 1]."""
    kl_sum = torch.nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = X.detach() + 0.001 * torch.randn(X.shape).detach()
    for _ in range(iters):
        x_adv.requires_grad_()
        if kind == "trades":
            objective = kl_sum(F.log_softmax(model(x_adv), dim=1), F.softmax(model(X), dim=1))
        else:
            objective = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(objective, [x_adv])[0]
        x_adv = x_adv.detach() + alpha * torch.sign(grad.detach())
        x_adv = torch.clamp(torch.min(torch.max(x_adv, X - eps), X + eps), 0.0, 1.0)
    model.train()
    return torch.clamp(x_adv, 0.0, 1.0)


def released_mart_loss(logits, logits_adv, y, beta):
    """mart.py's mart_loss from its two passes: boosted CE and the KL weighted by 1 - p_y(x)."""
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze()
    kl = torch.nn.KLDivLoss(reduction="none")(torch.log(adv_probs + 1e-12), nat_probs)
    return loss_adv + float(beta) * torch.sum(torch.sum(kl, dim=1) * (1.0000001 - true_probs)) / len(logits)


def released_trades_mart_steps(kind, model, xs, ys, eps, alpha, iters, beta, lr, momentum, kl_on_first_pass=False,
                               adv_pass_first=False):
    """train_trades_mnist.py's train() with trades.py's trades_loss, or MART's train() with mart.py's
    mart_loss, re-stated: the inner maximisation (released_inner_max); then in train mode TRADES'
    three passes f(x), f(x'), f(x) (CE on the first, the KL's p on the third) and MART's two, f(x)
    then f(x'); SGD with momentum. The flags break one released fact."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    kl_sum = torch.nn.KLDivLoss(reduction="sum")
    torch.manual_seed(11)
    for X, y in zip(xs, ys):
        model.train()
        opt.zero_grad()
        x_adv = released_inner_max(kind, model, X, y, eps, alpha, iters)
        opt.zero_grad()
        if kind == "trades":
            logits = model(X)
            logits_adv = model(x_adv)
            again = logits if kl_on_first_pass else model(X)
            robust = kl_sum(F.log_softmax(logits_adv, dim=1), F.softmax(again, dim=1)) / len(X)
            loss = F.cross_entropy(logits, y) + beta * robust
        else:
            if adv_pass_first:
                logits_adv = model(x_adv)
                logits = model(X)
            else:
                logits = model(X)
                logits_adv = model(x_adv)
            loss = released_mart_loss(logits, logits_adv, y, beta)
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("kind", ["trades", "mart"])
def test_trades_and_mart_steps_are_the_released_ones(kind):
    """SmallCNN with its dropout: the order and number of train-mode passes decide the dropout draws."""
    s = settings(f"{kind}-mnist", "--adv_steps=3", "--adv_step_size=0.1")
    xs, ys = data()
    ours = project_steps(s, network("smallcnn"), xs, ys)
    args = (network("smallcnn"), xs, ys, 0.3, 0.1, 3, s["BETA"], s["LR"], s["MOMENTUM"])
    theirs = released_trades_mart_steps(kind, *args)
    assert max_difference(ours, network("smallcnn")) > 1e-4  # it trained
    assert max_difference(ours, theirs) < 1e-10
    # one released fact changed: TRADES' KL on the first pass's f(x); MART's passes swapped
    broken = dict(kl_on_first_pass=True) if kind == "trades" else dict(adv_pass_first=True)
    assert max_difference(ours, released_trades_mart_steps(kind, network("smallcnn"), *args[1:], **broken)) > 1e-6


def test_trades_schedule_is_the_released_one():
    """train_trades_mnist.py's adjust_learning_rate(epoch), epochs counted from 1: x 0.1 from 55,
    x 0.01 from 75, x 0.001 from 90; the project's factor at each batch of each (0-based) epoch."""
    s = settings("trades-mnist")

    def released(epoch):
        return 0.001 if epoch >= 90 else 0.01 if epoch >= 75 else 0.1 if epoch >= 55 else 1.0

    steps = 3
    for epoch in range(s["EPOCHS"]):
        for b in range(steps):
            factor = training.SCHEDULES[s["SCHEDULE"]](epoch * steps + b, steps, s["EPOCHS"], s)
            assert factor == pytest.approx(released(epoch + 1), rel=1e-12)


def released_ssc_dm_epoch(model, xs, ys, eps, beta, lam, lr, momentum, weight_decay, metric="euc"):
    """SSC-DM's run_scripts/SSC-DM.py train_epoch, re-stated: X_adv by its FGSM (one signed step of
    eps from X on the mean cross-entropy, clipped to [0, 1], the model left in train mode), then
    (1 - beta) CE(f(X)) + beta CE(f(X_adv)) + lam * ||softmax(D(f(X))) - softmax(D(f(X_adv)))||_F / B
    on the logits, D by torch.norm of the pairwise differences (p 2 'euc', p 1 'manhattan'); SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)

    def probabilities(z):
        return F.softmax(torch.norm(z[:, None] - z, dim=2, p=2 if metric == "euc" else 1), dim=1)

    model.train()
    for X, y in zip(xs, ys):
        adv = X.clone().detach().requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model(adv), y), [adv])[0]
        adv_data = torch.clamp(adv + eps * grad.sign(), 0, 1).detach()
        opt.zero_grad()
        clean_output, adv_output = model(X), model(adv_data)
        sim = torch.linalg.norm(probabilities(clean_output) - probabilities(adv_output)) / len(clean_output)
        loss = ((1 - beta) * F.cross_entropy(clean_output, y) + beta * F.cross_entropy(adv_output, y)
                + lam * sim)
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("beta,lam,metric", [(1.0, 300.0, "euclidean"), (0.5, 300.0, "manhattan"),
                                             (0.5, 0.0, "euclidean")])
def test_ssc_dm_train_epoch_is_the_released_one(beta, lam, metric):
    """The preset ssc-released (classic LeNet, FGSM eps 0.03, SGD 0.01 momentum 0.9 weight decay
    1e-3, L_s on the logits) against train_epoch, on the same batches; lambda 300 (released) and 0."""
    s = settings("ssc-released", f"--alpha={1 - beta}", f"--beta={beta}", f"--struct_lambda={lam}",
                 f"--struct_metric={metric}", "--lr=0.5")  # a large rate: the sigmoid net moves visibly
    xs, ys = data()
    ours = project_steps(s, network("lenet-classic"), xs, ys)
    theirs = released_ssc_dm_epoch(network("lenet-classic"), xs, ys, 0.03, beta, lam, 0.5, 0.9, 1e-3,
                                   "euc" if metric == "euclidean" else "manhattan")
    assert max_difference(ours, network("lenet-classic")) > 1e-4
    assert max_difference(ours, theirs) < 1e-10
    if lam:  # the term counts: without it the released epoch is another one
        plain = released_ssc_dm_epoch(network("lenet-classic"), xs, ys, 0.03, beta, 0.0, 0.5, 0.9, 1e-3)
        assert max_difference(ours, plain) > 1e-6


def released_fgsm_rs_run(seed, images, labels, epochs, batch, eps, alpha, lr_max):
    """train_mnist.py from its seed on these images: torch.manual_seed, the DataLoader (shuffle=True),
    mnist_net() (its nn.Sequential, re-stated), Adam with the cyclic rate set before each batch, and
    the FGSM-RS step; the random draws (weights, the loader's order, the starts) all from the global
    stream, in the released order."""
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch, shuffle=True)
    side = images.shape[-1] // 4
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 4, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 4, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * side * side, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr_max)
    for epoch in range(epochs):
        for i, (X, y) in enumerate(loader):
            opt.param_groups[0].update(lr=np.interp([epoch + (i + 1) / len(loader)], [0, epochs * 2 // 5, epochs],
                                                    [0, lr_max, 0])[0])
            delta = torch.zeros_like(X).uniform_(-eps, eps)
            delta.requires_grad = True
            F.cross_entropy(model(X + delta), y).backward()
            delta.data = torch.clamp(delta + alpha * torch.sign(delta.grad.detach()), -eps, eps)
            delta.data = torch.max(torch.min(1 - X, delta.data), 0 - X)
            loss = F.cross_entropy(model(torch.clamp(X + delta.detach(), 0, 1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


@pytest.mark.slow
@pytest.mark.parametrize("shuffle,equal", [("loader", True), ("sampler", False)])
def test_fgsm_rs_run_from_its_seed_is_the_released_run(tmp_path, shuffle, equal):
    """vgg_training.py end to end (--preset=fgsm-rs-mnist on digits, 2 epochs, batch 100) against the
    released script from the same seed: with SHUFFLE=loader every draw (weights, batch order across
    epochs, the starts) is the released one and the weights agree to 1e-10; our own sampler's order
    is another run."""
    from robustlib.data import get_dataset
    from robustlib.errors import run
    train = get_dataset("digits", train=True)
    images, labels = train.batch(torch.arange(len(train)), "cpu")
    argv = ["--preset=fgsm-rs-mnist", "--dataset=digits", "--epochs=2", "--seed=3", f"--shuffle={shuffle}",
            "--collapse_check=0", f"--out_dir={tmp_path}"]
    assert run(vgg_training.main, argv) == 0
    ours = torch.load(tmp_path / "final.pt", weights_only=False)["model"]
    theirs = released_fgsm_rs_run(3, images, labels, 2, 100, 0.3, 0.375, 5e-3).state_dict()
    assert len(images) % 100 and len(ours) == len(theirs)  # a partial last batch: the loader keeps it
    difference = max((a - b).abs().max().item() for a, b in zip(ours.values(), theirs.values()))
    assert (difference < 1e-10) == equal, difference


def test_loader_order_is_one_process():
    from robustlib.errors import UserError
    training.check_processes(settings("fgsm-rs-mnist"), 1)
    training.check_processes(settings("fgsm-rs-mnist", "--shuffle=sampler"), 4)
    with pytest.raises(UserError, match="SHUFFLE=loader is the order of one process's DataLoader: run it as one process"):
        training.check_processes(settings("fgsm-rs-mnist"), 2)
