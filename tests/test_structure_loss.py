"""The spatial structural constraint L_s (SSC-DM paper) and its same-class successor L_rcc (RCCs paper)."""
import math

import pytest
import torch

from representation_consistency_loss import RepresentationConsistencyLoss, representation_consistency_loss
from spatial_structure_loss import METRICS, SpatialStructureLoss, spatial_structure_loss


def d_loop(u, v, metric):
    """One entry of D, written out: the distance (or cosine similarity) of two rows."""
    u, v = (w.detach().tolist() if isinstance(w, torch.Tensor) else w for w in (u, v))
    if metric == "euclidean":
        return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(u, v)))
    if metric == "manhattan":
        return sum(abs(float(x) - float(y)) for x, y in zip(u, v))
    dot = sum(float(x) * float(y) for x, y in zip(u, v))
    nu, nv = math.sqrt(sum(float(x) ** 2 for x in u)), math.sqrt(sum(float(y) ** 2 for y in v))
    return dot / (max(nu, 1e-8) * max(nv, 1e-8))


def m_loop(e, metric):
    n = e.shape[0]
    rows = []
    for i in range(n):
        d = [1.0 if (metric == "cosine" and i == j) else d_loop(e[i], e[j], metric) for j in range(n)]
        top = max(d)
        ex = [math.exp(v - top) for v in d]
        rows.append([v / sum(ex) for v in ex])
    return rows


def reference(a, b, metric="euclidean"):
    ma, mb = m_loop(a, metric), m_loop(b, metric)
    n = a.shape[0]
    return math.sqrt(sum((ma[i][j] - mb[i][j]) ** 2 for i in range(n) for j in range(n))) / n


def reference_rcc(a, b, y, metric="euclidean"):
    ma, mb = m_loop(a, metric), m_loop(b, metric)
    n, total = a.shape[0], 0.0
    for i in range(n):
        keep = [j for j in range(n) if j != i and int(y[j]) == int(y[i])]
        if not keep:
            continue  # no pair of its class: contributes 0
        u, v = [ma[i][j] for j in keep], [mb[i][j] for j in keep]
        dot = sum(p * q for p, q in zip(u, v))
        norm = math.sqrt(sum(p * p for p in u)) * math.sqrt(sum(q * q for q in v))
        total += 1 - dot / max(norm, 1e-8)
    return total / n


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("n,d", [(1, 3), (5, 4), (12, 7)])
def test_against_loop(n, d, metric):
    g = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, d, dtype=torch.float64, generator=g), torch.randn(n, d, dtype=torch.float64, generator=g)
    assert abs(spatial_structure_loss(a, b, metric).item() - reference(a, b, metric)) < 1e-10
    y = torch.randint(0, 3, (n,), generator=g)
    assert abs(representation_consistency_loss(a, b, y, metric).item() - reference_rcc(a, b, y, metric)) < 1e-10


@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(metric):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    assert torch.autograd.gradcheck(lambda p, q: spatial_structure_loss(p, q, metric), (a, b))
    assert torch.autograd.gradcheck(lambda p, q: representation_consistency_loss(p, q, y, metric), (a, b))


@pytest.mark.parametrize("metric", METRICS)
def test_zero_when_equal_and_permutation_invariant(metric):
    a, b = torch.randn(9, 5), torch.randn(9, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    assert spatial_structure_loss(a, a.clone(), metric).item() == 0.0
    assert abs(representation_consistency_loss(a, a.clone(), y, metric).item()) < 1e-6
    perm = torch.randperm(9)
    assert torch.allclose(SpatialStructureLoss(metric)(a[perm], b[perm]), spatial_structure_loss(a, b, metric),
                          atol=1e-6)
    assert torch.allclose(RepresentationConsistencyLoss(metric)(a[perm], b[perm], y[perm]),
                          representation_consistency_loss(a, b, y, metric), atol=1e-6)


def test_exact_diagonal_and_zero_rows():
    from spatial_structure_loss import pairwise
    a = torch.randn(5, 4) * 100
    for metric in ("euclidean", "manhattan"):
        assert (pairwise(a, metric).diagonal() == 0).all()
    a[2] = 0  # a zero row: cosine similar to itself (1) and to nothing else (0), finite gradients
    cos = pairwise(a, "cosine")
    assert (cos.diagonal() == 1).all() and (cos[2, [0, 1, 3, 4]] == 0).all()
    for fn in (lambda p, q: spatial_structure_loss(p, q, "cosine"),
               lambda p, q: representation_consistency_loss(p, q, torch.tensor([0, 0, 0, 1, 1]), "cosine")):
        p = a.clone().requires_grad_()
        q = torch.randn(5, 4, requires_grad=True)
        loss = fn(p, q)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()


def test_rcc_class_seen_once_contributes_zero():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    alone = torch.tensor([0, 1, 2, 3])  # no class twice: no pair anywhere
    loss = representation_consistency_loss(a.requires_grad_(), b, alone)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(a.grad).all()
    pair = torch.tensor([0, 0, 2, 3])  # only the first two have a partner
    assert abs(representation_consistency_loss(a, b, pair).item() - reference_rcc(a, b, pair)) < 1e-6
    with pytest.raises(ValueError, match="metric"):
        RepresentationConsistencyLoss("chebyshev")
    with pytest.raises(ValueError, match="1-D integer"):
        representation_consistency_loss(a, b, torch.zeros(4))


def test_finite_gradient_with_duplicates():
    base = torch.randn(3, 4)
    a = torch.cat([base, base]).requires_grad_()   # every row appears twice
    b = (torch.cat([base, base]) + 0.1 * torch.randn(6, 4)).requires_grad_()
    loss = spatial_structure_loss(a, b)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    same = torch.cat([base, base]).requires_grad_()
    spatial_structure_loss(same, same.detach().clone()).backward()
    assert torch.isfinite(same.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    a, b = torch.randn(16, 8), torch.randn(16, 8)
    ref = spatial_structure_loss(a, b).item()
    low = spatial_structure_loss(a.to(dtype), b.to(dtype))
    assert low.dtype == dtype and abs(low.item() - ref) < 2e-2 * max(ref, 1e-3) + 1e-3


@pytest.mark.parametrize("a,b,words", [
    (torch.randn(4), torch.randn(4), "2-D"),
    (torch.randn(4, 3), torch.randn(5, 3), "same shape"),
    (torch.randint(0, 3, (4, 3)), torch.randint(0, 3, (4, 3)), "floating"),
])
def test_bad_input(a, b, words):
    with pytest.raises(ValueError, match=words):
        spatial_structure_loss(a, b)


def test_empty_batch():
    assert spatial_structure_loss(torch.zeros(0, 3), torch.zeros(0, 3)).item() == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("filename,call", [
    ("spatial_structure_loss.py", "spatial_structure_loss.SpatialStructureLoss('cosine')(a, b)"),
    ("representation_consistency_loss.py",
     "representation_consistency_loss.RepresentationConsistencyLoss('manhattan')(a, b, y)"),
])
def test_copy_alone_imports_only_torch(tmp_path, root, filename, call):
    import os
    import shutil
    import subprocess
    import sys
    shutil.copy(os.path.join(root, filename), tmp_path / filename)
    module = filename[:-3]
    script = f"""
import sys, torch
sys.path.insert(0, {str(tmp_path)!r})
import {module}
a, b, y = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
loss = {call}
loss.backward()
assert torch.isfinite(a.grad).all() and loss.item() > 0
third_party = {{name.split('.')[0] for name in sys.modules}} - set(sys.stdlib_module_names)
assert {{'cli', 'data', 'models', 'metrics', 'checkpoints'}}.isdisjoint(third_party)
print("ok")
"""
    out = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr
