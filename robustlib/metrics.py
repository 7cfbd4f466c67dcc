"""Measurements shared by training, testing and the figures."""
import math

import torch


def wilson(correct, n, z=1.959964):
    """95 % Wilson score interval (low, high) of a binomial proportion correct/n; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar(right_a, right_b):
    """Exact two-sided McNemar p-value for two classifiers scored on the same samples (bool
    tensors): are their accuracies different beyond chance? 1.0 when they never disagree."""
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def probability_gap(logits, target):
    """Per sample: p_y - max_{j != y} p_j, p = softmax(logits). Negative when misclassified."""
    prob = torch.softmax(logits.to(torch.get_default_dtype()), dim=1)
    true = prob.gather(1, target.view(-1, 1)).squeeze(1)
    others = prob.scatter(1, target.view(-1, 1), float("-inf"))
    return true - others.max(dim=1).values


@torch.no_grad()
def predict(model, dataset, device, batch_size=1000, index=None):
    """Logits (torch's default float type, on the CPU) of `model` on `dataset` (all of it, or the given indices)."""
    model.eval()
    index = torch.arange(len(dataset)) if index is None else index
    out = []
    for chunk in index.split(batch_size):
        x, _ = dataset.batch(chunk, device)
        out.append(model(x).to(torch.get_default_dtype()).cpu())
    return torch.cat(out) if out else torch.empty(0, dataset.num_classes)


def evaluate(model, dataset, device, batch_size=1000):
    """(accuracy, mean probability gap) of `model` on `dataset`."""
    logits = predict(model, dataset, device, batch_size)
    labels = dataset.labels
    acc = (logits.argmax(1) == labels).float().mean().item()
    return acc, probability_gap(logits, labels).mean().item()
