"""The spatial structural constraint L_s (spec.md 1.3)."""
import pytest
import torch

from spatial_structure_loss import SpatialStructureLoss, spatial_structure_loss


def reference(a, b):
    n = a.shape[0]

    def structure(e):
        s = [[sum((e[i, d] - e[j, d]) ** 2 for d in range(e.shape[1])) ** 0.5 for j in range(n)]
             for i in range(n)]
        return torch.softmax(torch.tensor(s, dtype=torch.float64), dim=1)

    diff = structure(a) - structure(b)
    return (diff ** 2).sum().sqrt().item() / n


@pytest.mark.parametrize("n,d", [(1, 3), (5, 4), (12, 7)])
def test_against_loop(n, d):
    g = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, d, dtype=torch.float64, generator=g), torch.randn(n, d, dtype=torch.float64, generator=g)
    assert abs(spatial_structure_loss(a, b).item() - reference(a, b)) < 1e-10


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: spatial_structure_loss(p, q), (a, b))


def test_zero_when_equal_and_permutation_invariant():
    a, b = torch.randn(9, 5), torch.randn(9, 5)
    assert spatial_structure_loss(a, a.clone()).item() == 0.0
    perm = torch.randperm(9)
    assert torch.allclose(SpatialStructureLoss()(a[perm], b[perm]), spatial_structure_loss(a, b), atol=1e-6)


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
