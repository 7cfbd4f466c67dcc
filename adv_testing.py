"""Attack saved checkpoints side by side and report robust accuracy honestly: per attack and eps,
the per-sample worst case over every attack, and the sanity checks that expose gradient masking.

    python adv_testing.py runs/default/ce_warmup.pt runs/default/final.pt
    python adv_testing.py A.pt B.pt --attacks=fgsm,mim,pgd,square --eps=0.05,0.1 --n=1000

Writes OUT (CSV, long form: checkpoint, attack, eps, accuracy, n), OUT with .md (the table) and
.png (accuracy against eps). Attacks come from torchattacks, with the released settings.
"""
import math
import os
import sys

import torch
from tqdm import tqdm

from checkpoints import atomic_write, load_checkpoint, model_from_checkpoint
from cli import UserError, parse_settings, parse_value, resolve_device, run, settings_of
from data import MNIST_FAMILY, get_dataset

# ---- settings: edit them here, or override any as --name=value ------------------------------
ATTACKS = ["fgsm", "mim", "pgd"]   # any of: fgsm mim pgd bim cw spsa square autoattack
EPS = "auto"                       # comma list (8/255 allowed); auto: the dataset family's grid
N = 0                              # test images to attack (0: all), a fixed random subset
BATCH_SIZE = 500                   # images per attack call
STEPS = 10                         # mim / pgd / bim iterations, step size eps/STEPS (released)
SQUARE_QUERIES = 1000              # queries of the Square attack
SPSA_ITERS = 10                    # iterations of SPSA (128 samples each)
LARGE_EPS = 0.5                    # extra PGD run: accuracy must be about 0 there
DATA_DIR = ""                      # "" : the DATA_DIR the checkpoint was trained with
OUT = "results/adv_testing.csv"    # CSV; the .md table and .png plot go beside it
SEED = 0                           # subset choice and the attacks' random starts
DEVICE = "auto"                    # auto (cuda if present), cpu, cuda ...
# -------------------------------------------------------------------------------------------------

WHITE_BOX = ("fgsm", "mim", "pgd", "bim", "cw", "autoattack")
BLACK_BOX = ("spsa", "square")
ITERATIVE = ("mim", "pgd", "bim")
STATUS = {True: "PASS ", False: "", None: "NOT RUN "}
DEFAULT_EPS = {"mnist": [0.05, 0.1, 0.15, 0.2, 0.3], "32px": [1 / 255, 2 / 255, 4 / 255, 8 / 255],
               "tiny-imagenet": [0.005, 0.01, 0.015]}


def default_eps(dataset):
    if dataset in MNIST_FAMILY:
        return DEFAULT_EPS["mnist"]
    return DEFAULT_EPS["tiny-imagenet" if dataset == "tiny-imagenet" else "32px"]


def build_attack(name, model, eps, num_classes, s):
    """A torchattacks attack object for one eps, with the released settings."""
    import torchattacks as ta
    steps = s["STEPS"]
    if name == "fgsm":
        return ta.FGSM(model, eps=eps)
    if name == "mim":
        return ta.MIFGSM(model, eps=eps, alpha=eps / steps, steps=steps, decay=1.0)
    if name == "pgd":
        return ta.PGD(model, eps=eps, alpha=eps / steps, steps=steps, random_start=True)
    if name == "bim":
        return ta.BIM(model, eps=eps, alpha=eps / steps, steps=steps)
    if name == "cw":  # L2 attack; its perturbation is clipped into the L-inf ball (see run_attacks)
        return ta.CW(model, c=1, kappa=0, steps=50, lr=0.01)
    if name == "spsa":
        return ta.SPSA(model, eps=eps, delta=0.01, lr=0.01, nb_iter=s["SPSA_ITERS"], nb_sample=128,
                       max_batch_size=64)
    if name == "square":
        return ta.Square(model, norm="Linf", eps=eps, n_queries=s["SQUARE_QUERIES"], n_restarts=1,
                         seed=s["SEED"])
    if name == "autoattack":
        return ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=num_classes,
                             seed=s["SEED"])
    raise UserError(f"unknown attack {name!r}; attacks: {', '.join(WHITE_BOX + BLACK_BOX)}")


def run_attacks(model, dataset, index, attacks, eps_list, s, device, desc=""):
    """Per-sample correctness: {("clean", 0.0): bool[n], (attack, eps): bool[n], ...}.
    Every adversarial batch is checked to lie in the eps ball and in [0, 1]."""
    model.eval()
    batches = index.split(s["BATCH_SIZE"])
    out = {}
    with torch.no_grad():
        out[("clean", 0.0)] = torch.cat([model(dataset.batch(b, device)[0]).argmax(1).cpu()
                                         == dataset.labels[b] for b in batches])
    jobs = [(a, e) for a in attacks for e in eps_list]
    interactive = sys.stderr.isatty()
    for name, eps in tqdm(jobs, desc=f"attacks {desc}".strip(), disable=not interactive):
        torch.manual_seed(s["SEED"])
        attack = build_attack(name, model, eps, dataset.num_classes, s)
        correct = []
        for b in tqdm(batches, desc=f"{name} eps={eps:.4g}", leave=False, disable=not interactive):
            x, y = dataset.batch(b, device)
            adv = attack(x, y)
            if name == "cw":
                adv = x + (adv - x).clamp(-eps, eps)
            if (adv - x).abs().max() > eps + 1e-5 or adv.min() < 0 or adv.max() > 1:
                raise RuntimeError(f"{name} left the eps={eps} ball or [0, 1]")
            with torch.no_grad():
                correct.append((model(adv).argmax(1) == y).cpu())
        out[(name, eps)] = torch.cat(correct)
    return out


def worst_case(correct, eps_list):
    """Per eps: a sample is robust only if it is right on clean input and under every attack."""
    worst = {}
    for eps in eps_list:
        alive = correct[("clean", 0.0)].clone()
        for (name, e), right in correct.items():
            if e == eps and name != "clean":
                alive &= right
        worst[("worst", eps)] = alive
    return worst


def sanity_checks(acc, n, large_eps=None, large_acc=None):
    """The checks of spec.md 3 on accuracies {(attack, eps): float} measured on n images: a list of
    (ok, sentence), ok True (PASS), False (the sentence starts with WARNING) or None (not run).
    Differences within two binomial standard errors, 2 sqrt(p(1-p)/n), count as noise."""
    def noise(p):  # two binomial standard errors of an accuracy measured on n images
        return max(1.0 / n, 2 * math.sqrt(p * (1 - p) / n))

    n = max(n, 1)
    out = []
    names = sorted({a for a, _ in acc if a != "clean"})
    eps_all = sorted({e for a, e in acc if a != "clean"})

    bad = [f"{a}: {acc[(a, e1)]:.1%} at eps {e1:.4g} -> {acc[(a, e2)]:.1%} at {e2:.4g}"
           for a in names for e1, e2 in zip(eps_all, eps_all[1:])
           if (a, e1) in acc and (a, e2) in acc and acc[(a, e2)] > acc[(a, e1)] + noise(acc[(a, e2)])]
    out.append((not bad, "accuracy falls as eps grows" if not bad else
                "WARNING accuracy rises with eps (" + "; ".join(bad) + ")"))

    if large_acc is not None:
        ok = large_acc <= 0.02
        out.append((ok, f"PGD at eps {large_eps:g} leaves {large_acc:.1%} accuracy" +
                    ("" if ok else " -- WARNING: it should reach about 0; gradients may be masked")))

    bad = []
    for e in eps_all:
        iters = {it: acc[(it, e)] for it in ITERATIVE if (it, e) in acc}
        if iters and ("fgsm", e) in acc and min(iters.values()) > acc[("fgsm", e)] + noise(acc[("fgsm", e)]):
            best = min(iters, key=iters.get)
            bad.append(f"best iterative {best} {iters[best]:.1%} > fgsm {acc[('fgsm', e)]:.1%} at eps {e:.4g}")
    if any(("fgsm", e) in acc for e in eps_all) and any(a in ITERATIVE for a in names):
        out.append((not bad, "an iterative attack is at least as strong as FGSM at every eps" if not bad
                    else "WARNING single-step beats iterative (" + "; ".join(bad) + "): gradients "
                    "look masked, or the iterative attacks are too weak (raise STEPS)"))

    blacks = [a for a in names if a in BLACK_BOX]
    whites = [a for a in names if a in WHITE_BOX]
    if blacks and whites:
        bad = []
        for e in eps_all:
            white = [acc[(w, e)] for w in whites if (w, e) in acc]
            for bb in blacks:
                if white and (bb, e) in acc and acc[(bb, e)] < min(white) - noise(min(white)):
                    bad.append(f"{bb} {acc[(bb, e)]:.1%} < best white-box {min(white):.1%} at eps {e:.4g}")
        out.append((not bad, "black-box attacks are not stronger than white-box ones" if not bad else
                    "WARNING black-box beats white-box (" + "; ".join(bad) + "): gradients look "
                    "masked; white-box figures overstate robustness (or the white-box attacks are "
                    "too weak here: raise STEPS)"))
    else:
        out.append((None, "black-box check: add square or spsa to ATTACKS to test for gradient "
                    "masking"))
    return out


def label_of(path):
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.splitext(os.path.basename(path))[0]}"


def write_outputs(rows, labels, checks, out):
    """CSV (long form), Markdown table and PNG plot, each written to a temporary name first."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    frame = pd.DataFrame(rows, columns=["checkpoint", "attack", "eps", "accuracy", "n"])
    wide = frame.pivot_table(index=["attack", "eps"], columns="checkpoint", values="accuracy",
                             sort=False)[labels]
    lines = ["| attack | eps | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for (attack, eps), values in wide.iterrows():
        eps_text = "-" if attack == "clean" else f"{eps:.4g}"
        lines.append(f"| {attack} | {eps_text} | " + " | ".join(f"{100 * v:.2f}" for v in values) + " |")
    n = int(frame["n"].iloc[0])
    table = "\n".join(lines)
    text = (f"Robust accuracy (%) on {n} test images; `worst`: a sample counts only if it "
            f"survives every attack at that eps.\n\n{table}\n\nSanity checks:\n\n" +
            "\n".join(f"- {label}: {STATUS[ok]}{msg}"
                      for label in labels for ok, msg in checks[label]) + "\n")
    base = os.path.splitext(out)[0]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    attacks = [a for a in dict.fromkeys(frame["attack"]) if a not in ("clean", "pgd-large-eps")]
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3.0), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for label in labels:
            part = frame[(frame["attack"] == attack) & (frame["checkpoint"] == label)]
            clean = frame[(frame["attack"] == "clean") & (frame["checkpoint"] == label)]["accuracy"]
            ax.plot([0.0] + part["eps"].tolist(), [100 * clean.iloc[0]] + (100 * part["accuracy"]).tolist(),
                    marker="o", label=label)
        ax.set_title(attack)
        ax.set_xlabel("eps")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out, lambda f: f.write(frame.to_csv(index=False).encode()))
    atomic_write(base + ".md", lambda f: f.write(text.encode()))
    atomic_write(base + ".png", lambda f: fig.savefig(f, dpi=130, format="png"))
    plt.close(fig)
    return text


def main(argv):
    s, paths = parse_settings(settings_of(globals()), argv)
    if not paths:
        raise UserError("name at least one checkpoint: python adv_testing.py CKPT [CKPT ...]")
    attacks = [a.strip().lower() for a in s["ATTACKS"] if a.strip() not in ("", "clean", "worst")]
    for a in attacks:
        if a not in WHITE_BOX + BLACK_BOX:
            raise UserError(f"unknown attack {a!r}; attacks: {', '.join(WHITE_BOX + BLACK_BOX)}")
    states = [load_checkpoint(p) for p in paths]  # every file is checked before any work
    datasets = {st["meta"]["dataset"] for st in states}
    if len(datasets) > 1:
        raise UserError("checkpoints of different datasets cannot share one table: " +
                        ", ".join(f"{p} ({st['meta']['dataset']})" for p, st in zip(paths, states)))
    dataset_name = datasets.pop()
    eps_list = default_eps(dataset_name) if s["EPS"] == "auto" else parse_value("EPS", s["EPS"], [0.0])
    if not eps_list or any(not 0 < e <= 1 for e in eps_list):
        raise UserError(f"--eps={s['EPS']}: every eps must lie in (0, 1]")
    if not 0 < s["LARGE_EPS"] <= 1:
        raise UserError(f"--large_eps={s['LARGE_EPS']}: must lie in (0, 1]")
    device = resolve_device(s["DEVICE"])
    models = [model_from_checkpoint(st, p).to(device) for p, st in zip(paths, states)]
    root = s["DATA_DIR"] or states[0]["meta"]["settings"].get("DATA_DIR", "./data")
    test_set = get_dataset(dataset_name, train=False, root=root)
    count = len(test_set) if s["N"] <= 0 else min(s["N"], len(test_set))
    index = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(s["SEED"]))[:count]
    index = index.sort().values

    labels = [label_of(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{i + 1}:{lab}" for i, lab in enumerate(labels)]
    rows, checks = [], {}
    for label, model in zip(labels, models):
        correct = run_attacks(model, test_set, index, attacks, eps_list, s, device, desc=label)
        correct.update(worst_case(correct, eps_list))
        acc = {k: v.float().mean().item() for k, v in correct.items()}
        large = run_attacks(model, test_set, index, ["pgd"], [s["LARGE_EPS"]], s, device)
        large_acc = large[("pgd", s["LARGE_EPS"])].float().mean().item()
        checks[label] = sanity_checks(acc, count, s["LARGE_EPS"], large_acc)
        for (attack, eps), value in acc.items():
            rows.append((label, attack, eps, round(value, 6), count))
        rows.append((label, "pgd-large-eps", s["LARGE_EPS"], round(large_acc, 6), count))
    order = {a: i for i, a in enumerate(["clean"] + attacks + ["worst", "pgd-large-eps"])}
    rows.sort(key=lambda r: (order[r[1]], r[2]))
    text = write_outputs(rows, labels, checks, s["OUT"])
    print(text)
    base = os.path.splitext(s["OUT"])[0]
    print(f"written: {s['OUT']}, {base}.md, {base}.png")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
