"""adversarial_baselines.py: TRADES and MART against loops written here (float64, 1e-10), the
official-signature functions against reference runs written out step by step on a tiny model
with batch norm, bad input, and the file used alone."""
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from adversarial_baselines import mart_loss, mart_objective, trades_loss, trades_objective


def softmax_row(z):
    top = max(z)
    e = [math.exp(v - top) for v in z]
    return [v / sum(e) for v in e]


def trades_loop(z, z_adv, y, beta):
    total = 0.0
    for zi, zai, yi in zip(z.tolist(), z_adv.tolist(), y.tolist()):
        p, q = softmax_row(zi), softmax_row(zai)
        ce = -math.log(p[yi])
        kl = sum(pj * math.log(pj / qj) for pj, qj in zip(p, q) if pj > 0)
        total += ce + beta * kl
    return total / len(y)


def mart_loop(z, z_adv, y, beta):
    total = 0.0
    for zi, zai, yi in zip(z.tolist(), z_adv.tolist(), y.tolist()):
        p, q = softmax_row(zi), softmax_row(zai)
        other = max((j for j in range(len(q)) if j != yi), key=lambda j: q[j])
        bce = -math.log(q[yi]) - math.log(1.0001 - q[other] + 1e-12)
        kl = sum(pj * math.log(pj / (qj + 1e-12)) for pj, qj in zip(p, q) if pj > 0)
        total += bce + beta * kl * (1.0000001 - p[yi])
    return total / len(y)


@pytest.mark.parametrize("k,b,beta", [(2, 5, 1.0), (10, 32, 6.0), (100, 16, 0.5)])
def test_objectives_against_loops(k, b, beta):
    torch.manual_seed(k + b)
    z = torch.randn(b, k, dtype=torch.float64) * 3
    z_adv = z + torch.randn(b, k, dtype=torch.float64)
    y = torch.randint(0, k, (b,))
    assert abs(trades_objective(z, z_adv, y, beta=beta).item() - trades_loop(z, z_adv, y, beta)) < 1e-10
    assert abs(mart_objective(z, z_adv, y, beta=beta).item() - mart_loop(z, z_adv, y, beta)) < 1e-10
    for fn in (trades_objective, mart_objective):
        none = fn(z, z_adv, y, beta=beta, reduction="none")
        assert none.shape == (b,)
        assert torch.allclose(none.sum(), fn(z, z_adv, y, beta=beta, reduction="sum"), atol=1e-10)
        assert torch.allclose(none.mean(), fn(z, z_adv, y, beta=beta), atol=1e-10)


def test_objectives_terms_by_hand():
    z = torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1)]], dtype=torch.float64)
    z_adv = torch.tensor([[math.log(0.4), math.log(0.5), math.log(0.1)]], dtype=torch.float64)
    y = torch.tensor([0])
    kl = 0.7 * math.log(0.7 / 0.4) + 0.2 * math.log(0.2 / 0.5)
    assert trades_objective(z, z_adv, y, beta=2.0).item() == pytest.approx(-math.log(0.7) + 2 * kl, abs=1e-12)
    # y' is class 1 (p' = 0.5), the most probable other class; the KL is weighted by 1 - p_y = 0.3
    mart = -math.log(0.4) - math.log(1.0001 - 0.5 + 1e-12) + 2.0 * kl * (1.0000001 - 0.7)
    assert mart_objective(z, z_adv, y, beta=2.0).item() == pytest.approx(mart, abs=1e-9)
    assert trades_objective(z, z, y, beta=5.0).item() == pytest.approx(-math.log(0.7), abs=1e-12)


class Tiny(torch.nn.Module):
    """Conv, batch norm, dropout-free: train and eval mode differ through the batch statistics."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def kl_sum(logits_p, logits_q):
    p = torch.softmax(logits_p, 1)
    return (p * (torch.log(p) - torch.log_softmax(logits_q, 1))).sum()


def reference_run(kind, model, x, y, step, eps, steps, beta):
    """The official procedure, one step at a time: noise from the CPU generator, ascent in eval
    mode, projection, then the loss in train mode with the official order of forward passes."""
    model.eval()
    x_adv = x + 0.001 * torch.randn(x.shape)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        if kind == "trades":
            objective = kl_sum(model(x), model(x_adv))
        else:
            objective = torch.nn.functional.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(objective, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad)
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    if kind == "trades":
        ce = torch.nn.functional.cross_entropy(model(x), y)
        z_adv = model(x_adv)
        return ce + beta * kl_sum(model(x), z_adv) / len(x), x_adv
    z, z_adv = model(x), model(x_adv)
    return torch.tensor(mart_loop(z.detach().double(), z_adv.detach().double(), y, beta)), x_adv


@pytest.mark.parametrize("kind", ["trades", "mart"])
def test_official_signature_matches_a_reference_run(kind):
    torch.manual_seed(0)
    base = Tiny()
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 5, (6,))
    ours_model, ref_model = Tiny(), Tiny()
    ours_model.load_state_dict(base.state_dict())
    ref_model.load_state_dict(base.state_dict())
    optimizer = torch.optim.SGD(ours_model.parameters(), lr=0.1)
    fn = trades_loss if kind == "trades" else mart_loss
    torch.manual_seed(7)
    loss = fn(ours_model, x, y, optimizer, step_size=0.05, epsilon=0.2, perturb_steps=4, beta=3.0)
    torch.manual_seed(7)
    expected, x_adv = reference_run(kind, ref_model, x, y, 0.05, 0.2, 4, 3.0)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert ours_model.training  # returned in train mode, as the official code leaves it
    for a, b in zip(ours_model.bn.state_dict().values(), ref_model.bn.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)  # the same train-mode passes, in order
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    loss.backward()  # a training step works as in the official scripts
    optimizer.step()


def test_trades_l2_stays_in_the_ball():
    torch.manual_seed(0)
    model, x, y = Tiny(), torch.rand(4, 1, 8, 8), torch.randint(0, 5, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = trades_loss(model, x, y, optimizer, step_size=0.1, epsilon=0.5, perturb_steps=3, distance="l_2")
    assert torch.isfinite(loss) and loss.item() > 0


@pytest.mark.parametrize("call,words", [
    (lambda: trades_objective(torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(3, dtype=torch.long)), "differ in shape"),
    (lambda: trades_objective(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3)), "integer"),
    (lambda: mart_objective(torch.zeros(3, 4), torch.zeros(3, 4), torch.tensor([0, 1, 4])), "outside"),
    (lambda: mart_objective(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), beta=-1), "beta"),
    (lambda: trades_objective(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), reduction="avg"), "reduction"),
    (lambda: trades_loss(Tiny(), torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), None, epsilon=-0.1), "epsilon"),
    (lambda: trades_loss(Tiny(), torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), None, distance="l_1"), "distance"),
    (lambda: mart_loss(Tiny(), torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), None, distance="l_2"), "distance"),
    (lambda: mart_loss(Tiny(), torch.rand(2, 1, 8, 8), torch.zeros(3, dtype=torch.long), None), "labels"),
    (lambda: mart_loss(Tiny(), torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long), None, perturb_steps=1.5), "perturb_steps"),
])
def test_bad_input_is_one_value_error(call, words):
    with pytest.raises(ValueError, match=words) as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_copy_alone(tmp_path, root):
    shutil.copy(os.path.join(root, "adversarial_baselines.py"), tmp_path)
    code = ("import sys, torch, adversarial_baselines as ab; "
            "mods = {m.split('.')[0] for m in sys.modules}; "
            "assert not mods & {'numpy_local', 'cli', 'data', 'models', 'vgg_training'}; "
            "z = torch.randn(4, 3); print(float(ab.trades_objective(z, z, torch.tensor([0, 1, 2, 0]))))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert res.returncode == 0, res.stderr
    source = open(os.path.join(root, "adversarial_baselines.py")).read()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"torch", "torch.nn"}
