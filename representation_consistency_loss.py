"""Representation consistency among intra-class examples (RCC).

From "Improving Adversarial Robustness of Deep Learning Models via Representation Consistency
Constraints among Intra-class Examples" (code: JunzMiao/RCCs), the follow-up of the spatial
structural constraint by the same group. The same row-softmax matrices as there, computed on the
penultimate features f(.), are compared only over pairs of the same class:

    D(X)_ab = d(f(x_a), f(x_b)),   M(X) = softmax(D(X)) row by row                (B x B)
    M'_ab   = M_ab * [y_a == y_b] * [a != b]
    L_rcc   = 1 / B * sum_a (1 - cos(M'(X)_a, M'(X_adv)_a))

with cos(u, v) = <u, v> / max(||u|| ||v||, 1e-8) and d one of
    euclidean   ||a - b||_2 (the released default),   manhattan   ||a - b||_1,
    cosine      <a, b> / (max(||a||, 1e-8) max(||b||, 1e-8)), diagonal 1.
A sample whose class appears only once in the batch has no pair and contributes 0 (the released
code adds the constant 1 for it, which changes no gradient).

Training objective: (1 - beta) * CE(X, Y) + beta * CE(X_adv, Y) + lambda * L_rcc; released
defaults beta = 0.5, lambda = 15, euclidean.

This file imports nothing but torch: copy it into your project as it is.

    rcc = RepresentationConsistencyLoss(metric="euclidean")
    loss = 0.5 * ce(out, y) + 0.5 * ce(out_adv, y) + 15 * rcc(feat, feat_adv, y)
"""
import torch
from torch import nn

__all__ = ["RepresentationConsistencyLoss", "representation_consistency_loss", "METRICS"]

METRICS = ("euclidean", "manhattan", "cosine")


def _check_inputs(emb_natural, emb_adversarial, target, metric):
    for name, emb in (("emb_natural", emb_natural), ("emb_adversarial", emb_adversarial)):
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
            shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(f"{name} must be a 2-D tensor (batch x features), got {shape}")
        if not emb.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {emb.dtype}")
    if emb_natural.shape != emb_adversarial.shape:
        raise ValueError(f"emb_natural and emb_adversarial must have the same shape, got "
                         f"{tuple(emb_natural.shape)} and {tuple(emb_adversarial.shape)}")
    if (not isinstance(target, torch.Tensor) or target.dim() != 1 or target.is_floating_point()
            or target.is_complex() or target.dtype == torch.bool):
        what = f"{target.dtype} tensor of shape {tuple(target.shape)}" if isinstance(
            target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must be a 1-D integer tensor of class indices, got {what}")
    if target.shape[0] != emb_natural.shape[0]:
        raise ValueError(f"embeddings and target have different batch sizes: "
                         f"{emb_natural.shape[0]} and {target.shape[0]}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _pairwise(emb, metric):
    if metric == "cosine":
        unit = emb / torch.linalg.vector_norm(emb, dim=1, keepdim=True).clamp_min(1e-8)
        sim = unit @ unit.T
        return sim.diagonal_scatter(torch.ones_like(sim.diagonal()))
    return torch.cdist(emb, emb, p=2.0 if metric == "euclidean" else 1.0,
                       compute_mode="donot_use_mm_for_euclid_dist")


def representation_consistency_loss(emb_natural, emb_adversarial, target, metric="euclidean"):
    """Functional L_rcc. See the module docstring for the formula; 0 for an empty batch.

    Computed in float32 for float16/bfloat16 inputs and returned in their dtype.
    """
    _check_inputs(emb_natural, emb_adversarial, target, metric)
    batch = emb_natural.shape[0]
    if batch == 0:
        return (emb_natural.sum() + emb_adversarial.sum()) * 0
    low = (torch.float16, torch.bfloat16)
    nat = emb_natural.float() if emb_natural.dtype in low else emb_natural
    adv = emb_adversarial.to(nat.dtype)
    same = target.view(-1, 1) == target.view(1, -1)
    same.fill_diagonal_(False)
    rows = [torch.softmax(_pairwise(e, metric), dim=1).masked_fill(~same, 0.0) for e in (nat, adv)]
    dot = (rows[0] * rows[1]).sum(dim=1)
    norms = torch.linalg.vector_norm(rows[0], dim=1) * torch.linalg.vector_norm(rows[1], dim=1)
    per_sample = (1 - dot / norms.clamp_min(1e-8)) * same.any(dim=1)  # no pair: 0
    return (per_sample.sum() / batch).to(emb_natural.dtype)


class RepresentationConsistencyLoss(nn.Module):
    """L_rcc: per sample, 1 - cosine of its same-class rows of softmax(D(X)) and softmax(D(X_adv)),
    D the pairwise `metric` matrix of the features; averaged over the batch.

    Args:
        metric: 'euclidean' (default, as released), 'manhattan' or 'cosine'.

    forward(emb_natural, emb_adversarial, target): two (B, D) feature batches (row a of one
    belongs to row a of the other) and the (B,) integer labels.
    """

    def __init__(self, metric="euclidean"):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric

    def forward(self, emb_natural, emb_adversarial, target):
        return representation_consistency_loss(emb_natural, emb_adversarial, target, self.metric)

    def extra_repr(self):
        return f"metric={self.metric!r}"
