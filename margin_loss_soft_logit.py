"""Logit constraints (LC) -- the companion of the PC loss, added to it with a small weight.

From "Improving Adversarial Robustness via Probabilistically Compact Loss with Logit
Constraints" (X. Li, X. Li, D. Pan, D. Zhu, AAAI 2021, arXiv:2012.07688).

The PC loss can widen the probability gap by inflating the logits, and a gap bought that way
melts under a small perturbation. LC penalises the logit gap between the true class and the
most probable false classes. For logits z (B x K) and labels y:

    w_ij = softmax over j != y_i of z_ij          (the true class is masked out: w_{i,y_i} = 0)
    L_LC = 1 / B * sum_i sum_{j != y_i} max(0, w_ij * (z_{i,y_i} - z_ij))

Training objective after a cross-entropy warm-up (released code: lambda = 0.05):

    loss = PCLoss(xi=0.995)(logits, y) + 0.05 * LogitConstraintLoss()(logits, y)

This file imports nothing but torch: copy it into your project as it is.
"""
import torch
from torch import nn

__all__ = ["LogitConstraintLoss", "logit_constraint_loss", "MarginLoss"]

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


def logit_constraint_loss(logits, target, reduction="mean"):
    """Functional logit constraints. See the module docstring for the formula.

    reduction: 'none' gives one value per sample (its sum over false classes), 'sum' their
    sum, 'mean' their mean (0 for an empty batch).
    The loss is computed in float32 for float16/bfloat16 logits and returned in their dtype.
    """
    _check_inputs(logits, target, reduction)
    batch = logits.shape[0]
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    index = target.long().view(-1, 1)
    # The softmax over the false classes, the true class masked with -inf (exact: w_{i,y_i} = 0).
    # It is written out so that a row whose false-class logits are all -inf gets weight 0, not NaN.
    masked = work.scatter(1, index, float("-inf"))
    top = masked.detach().amax(dim=1, keepdim=True)
    expo = torch.exp(masked - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    weight = expo / expo.sum(dim=1, keepdim=True).clamp_min(torch.finfo(work.dtype).tiny)
    # relu(w * gap) = w * relu(gap) as w >= 0; a class of weight 0 (the true class, a -inf logit)
    # adds exactly 0, and no 0 * inf reaches the value or the gradient.
    gap = torch.relu(work.gather(1, index) - work)
    hinge = weight * torch.where(weight > 0, gap, torch.zeros_like(gap))
    if reduction == "none":
        out = hinge.sum(dim=1)
    else:
        out = hinge.sum() / (max(batch, 1) if reduction == "mean" else 1)
    return out if out.dtype == logits.dtype else out.to(logits.dtype)


class LogitConstraintLoss(nn.Module):
    """Logit constraints: per sample, sum over false classes j of max(0, w_j (z_y - z_j)),
    w = softmax of the false-class logits; averaged over the batch.

    Args:
        reduction: 'mean' (default), 'sum' or 'none', as in torch's losses.

    forward(logits, target): logits (B, K) floating point, target (B,) integer class indices.
    """

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits, target):
        return logit_constraint_loss(logits, target, self.reduction)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class MarginLoss(LogitConstraintLoss):
    """The released repository's name for LogitConstraintLoss, kept so code written for it still
    runs (the released notebook imports it as `from margin_loss_soft_logit import MarginLoss as
    LogitMargin`).

    MarginLoss(num_classes=10, use_gpu=True) -- both accepted and ignored: the class count is
    read from the logits, the device from the tensors.
    """

    def __init__(self, num_classes=10, use_gpu=True, reduction="mean"):
        super().__init__(reduction=reduction)
