"""Measurements shared by training, testing and the figures."""
import torch


def probability_gap(logits, target):
    """Per sample: p_y - max_{j != y} p_j, p = softmax(logits). Negative when misclassified."""
    prob = torch.softmax(logits.float(), dim=1)
    true = prob.gather(1, target.view(-1, 1)).squeeze(1)
    others = prob.scatter(1, target.view(-1, 1), float("-inf"))
    return true - others.max(dim=1).values


@torch.no_grad()
def predict(model, dataset, device, batch_size=1000, index=None):
    """Logits (float32, on the CPU) of `model` on `dataset` (all of it, or the given indices)."""
    model.eval()
    index = torch.arange(len(dataset)) if index is None else index
    out = []
    for chunk in index.split(batch_size):
        x, _ = dataset.batch(chunk, device)
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, dataset.num_classes)


def evaluate(model, dataset, device, batch_size=1000):
    """(accuracy, mean probability gap) of `model` on `dataset`."""
    logits = predict(model, dataset, device, batch_size)
    labels = dataset.labels
    acc = (logits.argmax(1) == labels).float().mean().item()
    return acc, probability_gap(logits, labels).mean().item()
