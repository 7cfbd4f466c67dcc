"""Spatial structural constraint in embedding space.

From "An Effective Deep Learning Adversarial Defense Method based on Spatial Structural
Constraints in Embedding Space" (code: JunzMiao/SSC-DM). Adversarial samples X_adv are crafted
from the natural batch X during training, and the pairwise geometry of the batch in the
representation r(.) is kept the same for both:

    D(X)_ab = d(r(x_a), r(x_b))                                     (B x B)
    M(X)    = softmax(D(X)) row by row
    L_s     = 1 / B * || M(X) - M(X_adv) ||_F                       (Frobenius norm)

with d one of
    euclidean   d(a, b) = ||a - b||_2          (the released default)
    manhattan   d(a, b) = ||a - b||_1
    cosine      d(a, b) = <a, b> / (max(||a||, 1e-8) * max(||b||, 1e-8)), the diagonal set to 1
                (a similarity, not a distance; a zero row is similar to itself and to nothing else)

The training objective is  (1 - beta) * CE(X, Y) + beta * CE(X_adv, Y) + lambda * L_s; the
released code uses beta = 1, lambda = 300, and r = the model's output (its logits).
lambda = 0 is plain adversarial training.

This file imports nothing but torch: copy it into your project as it is.

    struct = SpatialStructureLoss(metric="euclidean")
    out, out_adv = model(x), model(x_adv)
    loss = ce(out_adv, y) + 300 * struct(out, out_adv)
"""
import torch
from torch import nn

__all__ = ["SpatialStructureLoss", "spatial_structure_loss", "pairwise", "METRICS"]

METRICS = ("euclidean", "manhattan", "cosine")


def _check_inputs(emb_natural, emb_adversarial, metric):
    for name, emb in (("emb_natural", emb_natural), ("emb_adversarial", emb_adversarial)):
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
            shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(f"{name} must be a 2-D tensor (batch x features), got {shape}")
        if not emb.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {emb.dtype}")
    if emb_natural.shape != emb_adversarial.shape:
        raise ValueError(f"emb_natural and emb_adversarial must have the same shape, got "
                         f"{tuple(emb_natural.shape)} and {tuple(emb_adversarial.shape)}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def pairwise(emb, metric="euclidean"):
    """D(X): the B x B matrix of d(emb_a, emb_b) (see the module docstring), exact on the
    diagonal (0 for the distances, 1 for cosine), with finite gradients where rows coincide."""
    if metric == "cosine":
        unit = emb / torch.linalg.vector_norm(emb, dim=1, keepdim=True).clamp_min(1e-8)
        sim = unit @ unit.T
        return sim.diagonal_scatter(torch.ones_like(sim.diagonal()))
    # cdist without the matmul shortcut: exact 0 on the diagonal, and a zero (finite) gradient
    # where two embeddings coincide
    return torch.cdist(emb, emb, p=2.0 if metric == "euclidean" else 1.0,
                       compute_mode="donot_use_mm_for_euclid_dist")


def _as_float(emb_natural, emb_adversarial):
    low = (torch.float16, torch.bfloat16)
    nat = emb_natural.float() if emb_natural.dtype in low else emb_natural
    return nat, emb_adversarial.to(nat.dtype)


def spatial_structure_loss(emb_natural, emb_adversarial, metric="euclidean"):
    """Functional L_s. See the module docstring for the formula; 0 for an empty batch.

    Computed in float32 for float16/bfloat16 inputs and returned in their dtype.
    """
    _check_inputs(emb_natural, emb_adversarial, metric)
    batch = emb_natural.shape[0]
    if batch == 0:
        return (emb_natural.sum() + emb_adversarial.sum()) * 0
    nat, adv = _as_float(emb_natural, emb_adversarial)
    diff = torch.softmax(pairwise(nat, metric), dim=1) - torch.softmax(pairwise(adv, metric), dim=1)
    return (torch.linalg.matrix_norm(diff) / batch).to(emb_natural.dtype)


class SpatialStructureLoss(nn.Module):
    """L_s = || softmax(D(X)) - softmax(D(X_adv)) ||_F / B, D the pairwise `metric` matrix of
    the batch's representations, softmax taken row by row.

    Args:
        metric: 'euclidean' (default, as released), 'manhattan' or 'cosine'.

    forward(emb_natural, emb_adversarial): two (B, D) batches, row a of one the representation of
    the natural sample whose adversarial counterpart is row a of the other.
    """

    def __init__(self, metric="euclidean"):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric

    def forward(self, emb_natural, emb_adversarial):
        return spatial_structure_loss(emb_natural, emb_adversarial, self.metric)

    def extra_repr(self):
        return f"metric={self.metric!r}"
