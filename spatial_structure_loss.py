"""Spatial structural constraint in embedding space.

From "An Effective Deep Learning Adversarial Defense Method based on Spatial Structural
Constraints in Embedding Space". Adversarial samples X_adv are crafted from the natural batch X
during training, and the pairwise geometry of the batch in embedding space f(.) is kept the same:

    S(X)_ab = || f(x_a) - f(x_b) ||_2                                   (B x B, symmetric)
    L_s     = 1 / B * || softmax(S(X)) - softmax(S(X_adv)) ||_F          (row-wise softmax)

and the training objective is  alpha * CE(X, Y) + beta * CE(X_adv, Y) + lambda * L_s
(lambda = 0 is plain adversarial training).

This file imports nothing but torch: copy it into your project as it is.

    struct = SpatialStructureLoss()
    loss = ce(model(x), y) + ce(model(x_adv), y) + 100 * struct(model.embed(x), model.embed(x_adv))
"""
import torch
from torch import nn

__all__ = ["SpatialStructureLoss", "spatial_structure_loss"]


def _check_inputs(emb_natural, emb_adversarial):
    for name, emb in (("emb_natural", emb_natural), ("emb_adversarial", emb_adversarial)):
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
            shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(f"{name} must be a 2-D tensor (batch x features), got {shape}")
        if not emb.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {emb.dtype}")
    if emb_natural.shape != emb_adversarial.shape:
        raise ValueError(f"emb_natural and emb_adversarial must have the same shape, got "
                         f"{tuple(emb_natural.shape)} and {tuple(emb_adversarial.shape)}")


def _structure(emb):
    # Pairwise Euclidean distances, computed without the matmul shortcut so that the diagonal is
    # exactly 0; torch.cdist's backward is finite (zero) where two embeddings coincide.
    dist = torch.cdist(emb, emb, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.softmax(dist, dim=1)


def spatial_structure_loss(emb_natural, emb_adversarial):
    """Functional L_s. See the module docstring for the formula; 0 for an empty batch.

    Computed in float32 for float16/bfloat16 embeddings and returned in their dtype.
    """
    _check_inputs(emb_natural, emb_adversarial)
    batch = emb_natural.shape[0]
    if batch == 0:
        return (emb_natural.sum() + emb_adversarial.sum()) * 0
    low = (torch.float16, torch.bfloat16)
    nat = emb_natural.float() if emb_natural.dtype in low else emb_natural
    adv = emb_adversarial.to(nat.dtype)
    diff = _structure(nat) - _structure(adv)
    return (torch.linalg.matrix_norm(diff) / batch).to(emb_natural.dtype)


class SpatialStructureLoss(nn.Module):
    """L_s = || softmax(S(X)) - softmax(S(X_adv)) ||_F / B, S the pairwise L2 distance matrix of
    the batch's embeddings, softmax taken row by row.

    forward(emb_natural, emb_adversarial): two (B, D) embedding batches, row a of one the
    embedding of the natural sample whose adversarial counterpart is row a of the other.
    """

    def forward(self, emb_natural, emb_adversarial):
        return spatial_structure_loss(emb_natural, emb_adversarial)
