"""Indicators of attack failure (Pintor et al., "Indicators of Attack Failure", NeurIPS 2022) that a
table of robust accuracies hides, read by watching every forward pass an attack makes:

    silent success   an image the attack misclassified at some step, inside the eps ball and the
                     image, whose returned point the model gets right: the attack threw away a
                     success (its bookkeeping is broken), so its row overstates robustness;
    still rising     the attack was still fooling new images in the last 10 % of its forward passes:
                     more iterations would likely fool more, so its row is an upper bound too loose.

Only passes over the whole batch the attack was given count (attacks that go on with a subset, as
APGD's later restarts and Square do, are watched while they hold the whole batch).
"""
import torch
from torch import nn

from .attacks import distance

TAIL = 0.1        # the last fraction of forward passes "still rising" looks at
MIN_PASSES = 20   # fewer passes than this: too short an attack to say it was still rising
RISING_SHARE = 0.01  # "still rising" warns when at least this share of the images (and 2) fell that late


class Watch(nn.Module):
    """The model, seen by an attack on (x, y): per image, the first forward pass (counted over the
    passes on the whole batch) at which a point inside the eps ball and [0, 1] was misclassified."""

    def __init__(self, model, x, y, eps, norm="linf"):
        super().__init__()
        self.model, self.x, self.y, self.eps, self.norm = model, x, y, eps, norm
        self.passes = 0
        self.first = torch.full((len(y),), -1, dtype=torch.long, device=y.device)
        self.train(model.training)  # torchattacks restores the mode it found: the model's, not a new module's

    def forward(self, inputs):
        out = self.model(inputs)
        if inputs.shape == self.x.shape:
            with torch.no_grad():
                gap = distance(inputs, self.x, self.norm)
                flat = inputs.flatten(1)
                inside = (gap <= self.eps + 1e-5) & (flat.min(1).values >= -1e-6) & (flat.max(1).values <= 1 + 1e-6)
                new = inside & (out.argmax(1) != self.y) & (self.first < 0)
                self.first[new] = self.passes
            self.passes += 1
        return out

    def report(self, returned_right):
        """{"silent": images fooled at some pass whose returned point is right, "rising": images first
        fooled in the last TAIL of the passes (0 when there were fewer than MIN_PASSES), "passes"}."""
        fooled = (self.first >= 0).cpu()
        late = int((self.first >= (1 - TAIL) * self.passes).sum()) if self.passes >= MIN_PASSES else 0
        return dict(silent=int((fooled & returned_right.cpu()).sum()), rising=late, passes=self.passes)


def merge(parts):
    """One job's indicators from its blocks' reports."""
    return dict(silent=sum(p["silent"] for p in parts), rising=sum(p["rising"] for p in parts),
                passes=max((p["passes"] for p in parts), default=0))


def warnings(indicators, n_of):
    """(False, sentence) per job of one model whose indicator fired: {(attack, eps): indicators}, n_of:
    {(attack, eps): images the attack ran on}. One silent success fires; still rising, from RISING_SHARE
    of the images (at least 2)."""
    out = []
    for (attack, eps), got in sorted(indicators.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if got.get("silent"):
            out.append((False, f"WARNING {attack} at eps {eps:g}: silent success on {got['silent']} of "
                               f"{n_of[(attack, eps)]} images (misclassified at some step, returned right; Pintor et "
                               "al. 2022): its row overstates robustness; trust the worst case of attacks that keep "
                               "their best point (apgd-ce, apgd-t) instead"))
        if got.get("rising", 0) >= max(2, RISING_SHARE * n_of[(attack, eps)]):
            out.append((False, f"WARNING {attack} at eps {eps:g}: still fooling new images in its last "
                               f"{100 * TAIL:.0f} % of {got['passes']} forward passes ({got['rising']} images): rerun "
                               "with more iterations (--budget=standard, or a larger --apgd_steps / --steps)"))
    return out
