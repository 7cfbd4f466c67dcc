"""PC loss and logit constraints: exact values, gradients, dtypes, bad input, drop-in use."""
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from hard_margin_loss import MarginLoss, PCLoss, pc_loss
from margin_loss_soft_logit import LogitConstraintLoss, logit_constraint_loss


def pc_reference(z, y, xi):
    """Slow and obvious: the PC formula (README: the losses) written as loops."""
    b, k = z.shape
    total = 0.0
    for i in range(b):
        p = torch.softmax(z[i], 0)
        for j in range(k):
            if j != y[i]:
                total += max(0.0, xi + p[j].item() - p[y[i]].item())
    return total / (b * (k - 1))


def lc_reference(z, y):
    b, k = z.shape
    total = 0.0
    for i in range(b):
        others = [j for j in range(k) if j != y[i]]
        norm = sum(math.exp(z[i, j].item()) for j in others)
        for j in others:
            w = math.exp(z[i, j].item()) / norm
            total += max(0.0, w * (z[i, y[i]].item() - z[i, j].item()))
    return total / b


@pytest.mark.parametrize("k", [2, 10, 200])
@pytest.mark.parametrize("b", [1, 7, 256])
def test_against_loop_reference(k, b):
    g = torch.Generator().manual_seed(k * 1000 + b)
    z = torch.randn(b, k, dtype=torch.float64, generator=g) * 3
    y = torch.randint(0, k, (b,), generator=g)
    for xi in (0.0, 0.3, 0.995, 1.0):
        assert abs(pc_loss(z, y, xi).item() - pc_reference(z, y, xi)) < 1e-10
    assert abs(logit_constraint_loss(z, y).item() - lc_reference(z, y)) < 1e-10


def test_hand_computed_2x3():
    # sample 1: z = (0, ln 2, 0), y = 1 -> p = (1/4, 1/2, 1/4)
    # sample 2: z = (1, 0, 3),    y = 0 -> p = (e, 1, e^3) / (e + 1 + e^3)
    z = torch.tensor([[0.0, math.log(2.0), 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    xi = 0.5
    s = math.e + 1 + math.e ** 3
    p0, p1, p2 = math.e / s, 1 / s, math.e ** 3 / s
    pc1 = (max(0, xi + 0.25 - 0.5) + max(0, xi + 0.25 - 0.5)) / 2          # = 0.25
    pc2 = (max(0, xi + p1 - p0) + max(0, xi + p2 - p0)) / 2
    assert pc1 == pytest.approx(0.25)
    assert pc_loss(z, y, xi).item() == pytest.approx((pc1 + pc2) / 2, abs=1e-12)
    assert torch.allclose(pc_loss(z, y, xi, reduction="none"),
                          torch.tensor([pc1, pc2], dtype=torch.float64), atol=1e-12)
    # LC sample 1: w = (1/2, -, 1/2), gaps ln 2 -> ln 2.  sample 2: w = (-, 1, e^3)/(1 + e^3),
    # gaps (1, -2): only the first counts -> 1 / (1 + e^3)
    lc1, lc2 = math.log(2.0), 1 / (1 + math.e ** 3)
    assert logit_constraint_loss(z, y).item() == pytest.approx((lc1 + lc2) / 2, abs=1e-12)
    assert logit_constraint_loss(z, y, reduction="sum").item() == pytest.approx(lc1 + lc2, abs=1e-12)


def test_gradcheck():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 3, 1, 2, 1])
    # xi = 0.3 keeps every hinge away from its kink for these logits
    assert torch.autograd.gradcheck(lambda t: pc_loss(t, y, 0.3), (z,))
    assert torch.autograd.gradcheck(lambda t: logit_constraint_loss(t, y), (z,))


def test_modules_reductions_and_alias():
    z, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    per = PCLoss(0.7, reduction="none")(z, y)
    assert per.shape == (6,)
    assert torch.allclose(PCLoss(0.7, reduction="sum")(z, y), per.sum())
    assert torch.allclose(PCLoss(0.7)(z, y), per.mean())
    old = MarginLoss(num_classes=5, use_gpu=False)  # the released signature
    assert old.xi == 0.8 and torch.allclose(old(z, y), pc_loss(z, y, 0.8))
    assert PCLoss().xi == 0.995
    lc = LogitConstraintLoss(reduction="none")(z, y)
    assert torch.allclose(LogitConstraintLoss()(z, y), lc.mean())


def test_empty_batch_is_zero():
    z, y = torch.zeros(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.long)
    for loss in (pc_loss(z, y), logit_constraint_loss(z, y)):
        assert loss.item() == 0.0
        loss.backward()


BAD = [
    (torch.randn(4), torch.tensor([0, 1, 2, 3]), "2-D"),
    (torch.randn(2, 3, 4), torch.tensor([0, 1]), "2-D"),
    (torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0]), "integer"),
    (torch.randn(3, 4), torch.tensor([[0], [1], [2]]), "1-D"),
    (torch.randn(3, 4), torch.tensor([True, False, True]), "integer"),
    (torch.randn(3, 4), torch.tensor([0, 1]), "batch sizes"),
    (torch.randn(3, 4), torch.tensor([0, 1, 4]), "outside"),
    (torch.randn(3, 4), torch.tensor([0, -1, 2]), "outside"),
    (torch.randn(3, 1), torch.tensor([0, 0, 0]), "at least 2"),
    (torch.randint(0, 3, (3, 4)), torch.tensor([0, 1, 2]), "floating"),
]


@pytest.mark.parametrize("z,y,words", BAD)
@pytest.mark.parametrize("fn", [pc_loss, logit_constraint_loss])
def test_bad_input(fn, z, y, words):
    with pytest.raises(ValueError, match=words):
        fn(z, y)


@pytest.mark.parametrize("xi", [-0.1, 1.5])
def test_bad_margin(xi):
    with pytest.raises(ValueError, match="margin"):
        PCLoss(xi)
    with pytest.raises(ValueError, match="margin"):
        pc_loss(torch.randn(2, 3), torch.tensor([0, 1]), xi)
    with pytest.raises(ValueError, match="reduction"):
        LogitConstraintLoss(reduction="avg")


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("k", [2, 10, 200])
def test_low_precision_matches_float32(dtype, tol, k):
    g = torch.Generator().manual_seed(k)
    z = torch.randn(64, k, generator=g) * 4
    y = torch.randint(0, k, (64,), generator=g)
    for fn in (pc_loss, logit_constraint_loss):
        ref = fn(z, y).item()
        low = fn(z.to(dtype).requires_grad_(), y)
        assert low.dtype == dtype and torch.isfinite(low)
        assert abs(low.item() - ref) <= tol * max(1.0, abs(ref)), (fn.__name__, low.item(), ref)
        # huge logits: no overflow from masking constants, gradients finite
        big = (z * 1e3).to(dtype).requires_grad_()
        out = fn(big, y)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(big.grad).all()


def test_autocast_bfloat16_on_cpu():
    model = torch.nn.Linear(8, 5)
    x, y = torch.randn(16, 8), torch.randint(0, 5, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = PCLoss()(logits, y) + 0.05 * LogitConstraintLoss()(logits, y)
    loss.backward()
    ref = PCLoss()(model(x), y) + 0.05 * LogitConstraintLoss()(model(x), y)
    assert torch.isfinite(loss) and abs(loss.item() - ref.item()) < 2e-2
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    z, y = torch.randn(32, 10) * 3, torch.randint(0, 10, (32,))
    for fn in (pc_loss, logit_constraint_loss):
        got = fn(z.cuda().to(dtype), y.cuda()).float().cpu()
        assert torch.allclose(got, fn(z, y), atol=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("filename,expr", [
    ("hard_margin_loss.py", "hard_margin_loss.PCLoss(0.995)"),
    ("margin_loss_soft_logit.py", "margin_loss_soft_logit.LogitConstraintLoss()"),
])
def test_drop_in_copy_alone(tmp_path, root, filename, expr):
    shutil.copy(os.path.join(root, filename), tmp_path / filename)
    module = filename[:-3]
    script = f"""
import sys, torch
sys.path.insert(0, {str(tmp_path)!r})
import {module}
assert {module}.__file__.startswith({str(tmp_path)!r})
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
criterion = {expr}
x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
before = criterion(model(x), y)
opt.zero_grad(); before.backward(); opt.step()
after = criterion(model(x), y)
assert after.item() < before.item(), (before.item(), after.item())
third_party = {{name.split('.')[0] for name in sys.modules}} - set(sys.stdlib_module_names)
assert {{'cli', 'data', 'models', 'metrics', 'checkpoints'}}.isdisjoint(third_party)
print("ok", before.item(), after.item())
"""
    # -I: isolated mode, neither the repository nor PYTHONPATH is on the path
    out = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


@pytest.mark.slow
def test_released_notebook_loss_lines_run_unchanged(tmp_path):
    """The released notebook's exact lines (imports, constructors, the objective), run on the two
    files alone, against the PC and LC formulas (README: the losses) written out here."""
    import textwrap
    for name in ("hard_margin_loss.py", "margin_loss_soft_logit.py"):
        shutil.copy(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name),
                    tmp_path / name)
    script = textwrap.dedent("""
        import torch
        from hard_margin_loss import MarginLoss
        from margin_loss_soft_logit import MarginLoss as LogitMargin
        logit_margin = LogitMargin()
        c_margin = MarginLoss(margin=0.995)
        torch.manual_seed(0)
        output, target = torch.randn(64, 10, dtype=torch.float64) * 3, torch.randint(0, 10, (64,))
        m_loss = c_margin(output, target)
        logit_m_loss = logit_margin(output, target)
        batch_loss = m_loss + 0.05 * logit_m_loss
        # the formulas, written out with loops
        p = torch.softmax(output, 1)
        pc = lc = 0.0
        for i in range(64):
            y = int(target[i])
            others = [j for j in range(10) if j != y]
            w = torch.softmax(output[i, others], 0)
            for k, j in enumerate(others):
                pc += max(0.0, 0.995 + float(p[i, j]) - float(p[i, y]))
                lc += max(0.0, float(w[k]) * float(output[i, y] - output[i, j]))
        expected = pc / (64 * 9) + 0.05 * lc / 64
        assert abs(batch_loss.item() - expected) < 1e-10, (batch_loss.item(), expected)
        assert LogitMargin(num_classes=10, use_gpu=True)(output, target).item() == logit_m_loss.item()
        print("ok")
    """)
    (tmp_path / "notebook.py").write_text(script)
    # -E -s: no environment, no user site; the script's folder (the two files alone) is on the path
    res = subprocess.run([sys.executable, "-E", "-s", str(tmp_path / "notebook.py")], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_minus_infinity_false_class_logits_stay_finite():
    """A false class with logit -inf (a masked class) has LC weight 0 and adds exactly 0; PC and
    cross-entropy are finite there too. With K = 2 the only false class may be -inf: LC is 0."""
    inf = float("inf")
    z = torch.tensor([[2.0, -inf, 0.5], [1.0, 3.0, -inf], [-inf, 1.0, 0.0], [4.0, -inf, -inf]],
                     dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0])
    value = logit_constraint_loss(z, y, reduction="none")
    # by hand: only the finite false classes count; each row has one, so its weight is 1
    assert torch.allclose(value, torch.tensor([1.5, 2.0, 1.0, 0.0], dtype=torch.float64))
    value.sum().backward()
    assert torch.isfinite(z.grad).all()
    assert torch.equal(z.grad[:, :][torch.isinf(z.detach())], torch.zeros(5, dtype=torch.float64))
    for loss in (pc_loss(z, y), torch.nn.functional.cross_entropy(z, y)):
        assert torch.isfinite(loss)
    pair = torch.tensor([[2.0, -inf]], requires_grad=True)
    lc = logit_constraint_loss(pair, torch.tensor([0]))
    lc.backward()
    assert lc.item() == 0.0 and torch.isfinite(pair.grad).all()


def test_copy_alone_files_share_their_helpers_unchanged(root):
    """The loss files repeat their small helpers so that each can be copied alone; the copies
    must stay the same code (compared as syntax trees, docstrings and comments aside)."""
    import ast

    def body(filename, name):
        tree = ast.parse(open(os.path.join(root, filename)).read())
        fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
        stmts = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(
            getattr(fn.body[0], "value", None), ast.Constant) else fn.body
        return [ast.dump(s) for s in stmts]

    assert body("hard_margin_loss.py", "_check_inputs") == body("margin_loss_soft_logit.py", "_check_inputs")
    assert body("spatial_structure_loss.py", "pairwise") == body("representation_consistency_loss.py", "_pairwise")
