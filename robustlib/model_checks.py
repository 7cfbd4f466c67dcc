"""AutoAttack's own checks on the model itself (Croce & Hein's reference code, autoattack/checks.py,
re-stated): a randomized forward pass, probabilities where logits belong, inputs whose gradient is
zero, gradients computed inside the forward pass (a dynamic defense), and too few classes for the
targeted attacks. Each returns (ok, sentence) like evaluation's sanity checks: ok False is a warning
that says what to run next; all of them hold on a plain network. (The fifth reference check, Square
beating the white-box attacks, is evaluation's black-box check.)"""
import sys

import torch
import torch.nn.functional as F

PASSES = 5            # forward passes compared for randomness (the reference: 5)
RANDOM_TOL = 1e-4     # the largest difference of L2-normalised outputs a deterministic model shows
PROB_TOL = 1e-5       # outputs within [0, 1] and rows summing to 1 up to this: probabilities
TARGETED = ("apgd-t", "fab-t", "apgd-dlr")   # attacks whose losses need more than three classes


def _normalised(out):
    return out / (torch.linalg.vector_norm(out, dim=1, keepdim=True) + 1e-10)


def randomized(model, x, y):
    with torch.no_grad():
        outs = [model(x) for _ in range(PASSES)]
    correct = {int((o.argmax(1) == y).sum()) for o in outs}
    diff = max((_normalised(a) - _normalised(b)).norm(dim=1).max().item() for a in outs for b in outs)
    if len(correct) == 1 and diff <= RANDOM_TOL:
        return True, "the forward pass is deterministic"
    return False, (f"WARNING the model is randomized ({PASSES} passes on the same images differ by up to "
                   f"{diff:.3g} in their normalised outputs, {len(correct)} different counts of correct "
                   f"predictions): at every eps its rows understate attacks that average over its "
                   f"randomness; fix the randomness, or attack it with expectation over transformation")


def probabilities(model, x):
    with torch.no_grad():
        out = model(x)
    if out.max() < 1 + PROB_TOL and out.min() > -PROB_TOL and ((out.sum(1) - 1).abs() < PROB_TOL).all():
        return False, ("WARNING the model returns probabilities (every row in [0, 1], summing to 1): "
                       "at every eps the attacks' losses saturate; evaluate the network without its softmax "
                       "(--arch with a function that returns the logits)")
    return True, "the model returns logits, not probabilities"


def zero_gradients(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    grad, = torch.autograd.grad(loss, x, allow_unused=True) if loss.requires_grad else (None,)
    zero = len(x) if grad is None else int((grad.flatten(1).abs().sum(1) == 0).sum())  # None: x unused
    if zero:
        return False, (f"WARNING {zero} of {len(x)} images have an all-zero input gradient: at every eps "
                       f"gradient attacks cannot move them; read the black-box rows (square, spsa) and raise "
                       f"--square_queries")
    return True, "every image has a non-zero input gradient"


def dynamic(model, x):
    """A forward pass that calls autograd itself (the reference traces the same three names)."""
    calls = []

    def trace(frame, event, arg):
        if event == "call" and frame.f_code.co_name in ("grad", "backward", "_make_grads"):
            calls.append(frame.f_code.co_name)
    before = sys.gettrace()
    sys.settrace(trace)
    try:
        with torch.enable_grad():
            model(x)
    finally:
        sys.settrace(before)
    if calls:
        return False, (f"WARNING the forward pass computes gradients ({', '.join(sorted(set(calls)))}): a dynamic "
                       f"defense, for which AutoAttack may be insufficient at every eps; write an adaptive attack")
    return True, "the forward pass computes no gradients"


def enough_classes(classes, attacks):
    targeted = [a for a in attacks if a in TARGETED]
    if targeted and classes <= 3:
        return False, (f"WARNING with {classes} classes the targeted DLR losses of {', '.join(targeted)} do not "
                       f"apply: read apgd-ce and square as the white-box and black-box attacks")
    return True, "enough classes for the targeted attacks"


def model_checks(model, x, y, classes, attacks):
    """The checks on a batch (x, y) of test images: [(ok, sentence)], one PASS line when all hold."""
    model.eval()
    checks = [randomized(model, x, y), probabilities(model, x), zero_gradients(model, x, y), dynamic(model, x),
              enough_classes(classes, attacks)]
    failed = [c for c in checks if not c[0]]
    return failed or [(True, "AutoAttack's model checks: " + "; ".join(sentence for _, sentence in checks))]
