"""Probabilistically Compact (PC) loss -- a drop-in replacement for nn.CrossEntropyLoss.

From "Improving Adversarial Robustness via Probabilistically Compact Loss with Logit
Constraints" (X. Li, X. Li, D. Pan, D. Zhu, AAAI 2021, arXiv:2012.07688).

For logits z (B x K), p = softmax(z) and labels y:

    L_PC = 1 / (B (K-1)) * sum_i sum_{j != y_i} max(0, xi + p_ij - p_{i,y_i})

It pushes the true-class probability above every false-class probability by the margin xi
(0 <= xi <= 1, in probability units). Train with cross-entropy first: the paper (and the
released code) starts PC training from a converged cross-entropy model.

This file imports nothing but torch: copy it into your project as it is.

    criterion = PCLoss(xi=0.995)          # instead of nn.CrossEntropyLoss()
    loss = criterion(model(images), labels)
"""
import torch
from torch import nn

__all__ = ["PCLoss", "pc_loss", "MarginLoss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_inputs(logits, target, reduction):
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a 2-D tensor (batch x classes), got {shape}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least 2 classes, got {logits.shape[1]}")
    if (not isinstance(target, torch.Tensor) or target.dim() != 1
            or target.is_floating_point() or target.is_complex() or target.dtype == torch.bool):
        what = f"{target.dtype} tensor of shape {tuple(target.shape)}" if isinstance(
            target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must be a 1-D integer tensor of class indices, got {what}")
    if target.shape[0] != logits.shape[0]:
        raise ValueError(f"logits and target have different batch sizes: "
                         f"{logits.shape[0]} and {target.shape[0]}")
    num_classes = logits.shape[1]
    if target.numel():
        low, high = (int(v) for v in torch.aminmax(target))
        if low < 0 or high >= num_classes:
            raise ValueError(f"target holds a label outside [0, {num_classes}): min {low}, max {high}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_margin(xi):
    if not 0.0 <= float(xi) <= 1.0:
        raise ValueError(f"the margin xi must lie in [0, 1] (probability units), got {xi}")


def pc_loss(logits, target, xi=0.995, reduction="mean"):
    """Functional PC loss. See the module docstring for the formula.

    reduction: 'none' gives one value per sample (its sum over false classes / (K-1)),
    'sum' their sum, 'mean' their mean (0 for an empty batch).
    The loss is computed in float32 for float16/bfloat16 logits and returned in their dtype.
    """
    _check_margin(xi)
    _check_inputs(logits, target, reduction)
    batch, num_classes = logits.shape
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    index = target.long().view(-1, 1)
    prob = torch.softmax(work, dim=1)
    hinge = torch.relu(prob - (prob.gather(1, index) - xi))
    hinge = hinge.scatter(1, index, 0.0)  # exact: the j = y_i term never counts
    if reduction == "none":
        out = hinge.sum(dim=1) / (num_classes - 1)
    else:
        out = hinge.sum() / ((num_classes - 1) * (max(batch, 1) if reduction == "mean" else 1))
    return out if out.dtype == logits.dtype else out.to(logits.dtype)


class PCLoss(nn.Module):
    """Probabilistically Compact loss: mean over samples and false classes j of
    max(0, xi + p_j - p_y), with p = softmax(logits).

    Args:
        xi: margin in probability units, 0 <= xi <= 1. Default 0.995, the value the released
            training code used (the released MarginLoss class itself defaulted to 0.8).
        reduction: 'mean' (default), 'sum' or 'none', as in torch's losses.

    forward(logits, target): logits (B, K) floating point, target (B,) integer class indices.
    """

    def __init__(self, xi=0.995, reduction="mean"):
        super().__init__()
        _check_margin(xi)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.xi = float(xi)
        self.reduction = reduction

    def forward(self, logits, target):
        return pc_loss(logits, target, self.xi, self.reduction)

    def extra_repr(self):
        return f"xi={self.xi}, reduction={self.reduction!r}"


class MarginLoss(PCLoss):
    """The released repository's name for PCLoss, kept so code written for it still runs.

    MarginLoss(num_classes=..., margin=0.8, use_gpu=...) -- num_classes and use_gpu are
    accepted and ignored (the class count is read from the logits, the device from the
    tensors); margin keeps the released default of 0.8.
    """

    def __init__(self, num_classes=None, margin=0.8, use_gpu=None, reduction="mean"):
        super().__init__(xi=margin, reduction=reduction)
