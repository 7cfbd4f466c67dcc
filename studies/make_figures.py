"""Draw the paper's three figures from a cross-entropy and a PC checkpoint of the same dataset.

    python studies/make_figures.py --ce=runs/repro/ce/final.pt --pc=runs/repro/pclc/final.pt

Writes into OUT_DIR, named after the dataset and model (e.g. fashion-mnist-lenet5-*):
  *-motivation.png  per attack and eps: new successful attacks on the CE model (line, right axis)
                    and the share landing on the clean prediction's 2nd..5th class (bars, left axis)
  *-effect.png      mean probability gap p_y - max_{j != y} p_j, CE vs PC, and a t-SNE of each
  *-tsne.png        t-SNE, CE and PC, clean test images alone and with their successful FGSM attacks
  *-figures.md / *-motivation.csv   the numbers behind the pictures
"""
import os
import sys
import time


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
if _ROOT not in sys.path:  # run as a script from its folder: the library and the scripts sit at the root
    sys.path.insert(0, _ROOT)

import torch

from robustlib import attacks
from robustlib.checkpoints import atomic_write, load_checkpoint, model_from_checkpoint
from robustlib.cli import (ANY_TEXT, DEVICE_RULE, WRITABLE_DIR, check_settings, grid_or_auto, interval,
                 parse_settings, parse_value, settings_of)
from robustlib.data import MNIST_FAMILY, get_dataset
from robustlib.errors import UserError, run
from robustlib.metrics import evaluate, predict
from robustlib.runtime import resolve_device

# ---- settings: edit them here, or override any as --name=value ------------------------------
CE = ""                        # checkpoint trained with cross-entropy (required)
PC = ""                        # checkpoint trained with PC (+ LC) (required)
OUT_DIR = "Figures"            # where the PNGs and their numbers go
N_MOTIVATION = 1000            # test images attacked for the motivation figure
N_TSNE = 1000                  # test images in each t-SNE
FGSM_EPS = "auto"              # motivation grid for FGSM; auto: 0.01..0.1 (MNIST family), 0.003..0.03
MIM_EPS = "auto"               # motivation grid for MIM;  auto: 0.005..0.05 (MNIST family), 0.001..0.01
TSNE_EPS = 0.0                 # FGSM eps of the t-SNE attack panels; 0: 0.1 (MNIST family), 8/255
DATA_DIR = ""                  # "" : the DATA_DIR the checkpoints were trained with
SEED = 0                       # subsets, attacks and t-SNE
DEVICE = "auto"

RANGES = {"CE": ANY_TEXT, "PC": ANY_TEXT, "OUT_DIR": WRITABLE_DIR,
          "N_MOTIVATION": interval("[1, inf)", integer=True),
          "N_TSNE": interval("[31, inf)", integer=True),  # more points than t-SNE's perplexity 30
          "FGSM_EPS": grid_or_auto("(0, 1]"), "MIM_EPS": grid_or_auto("(0, 1]"),
          "TSNE_EPS": interval("[0, 1]"), "DATA_DIR": ANY_TEXT,
          "SEED": interval("[0, inf)", integer=True), "DEVICE": DEVICE_RULE}
# -------------------------------------------------------------------------------------------------

RANKS = (2, 3, 4, 5)


def released(name, model, eps, classes):
    """The registry's attack with the PC-LC notebook's settings (MIM: 10 steps of eps / 10, decay 1)."""
    steps = attacks.RELEASED_STEPS
    knobs = attacks.Knobs(steps=steps, step=attacks.STEP_RULES["released"](eps, steps), classes=classes)
    return attacks.build(name, model, eps, knobs)


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def grid(text, dataset, mnist_default, other_default):
    if text != "auto":
        return parse_value("EPS", text, [0.0])
    start, stop = mnist_default if dataset in MNIST_FAMILY else other_default
    return [round(start * k, 6) for k in range(1, int(round(stop / start)) + 1)]


def new_attack_ranks(clean_logits, labels, adv_preds):
    """Motivation statistics. adv_preds: [(eps, predictions on the attacked images)], eps ascending.

    For each eps: `new`, the samples correct on clean input and first fooled at this eps; and the
    share of them whose adversarial prediction is the clean prediction's 2nd, 3rd, 4th, 5th most
    probable class (`other`: lower ranks). Returns a list of dicts, one per eps."""
    order = clean_logits.argsort(dim=1, descending=True)            # classes by clean probability
    rank_of = torch.empty_like(order)
    rank_of.scatter_(1, order, torch.arange(1, order.shape[1] + 1).expand_as(order))
    fooled_before = clean_logits.argmax(1) != labels                 # wrong already: never "new"
    rows = []
    for eps, pred in adv_preds:
        fooled = pred != labels
        new = fooled & ~fooled_before
        ranks = rank_of.gather(1, pred.view(-1, 1)).squeeze(1)[new]
        count = int(new.sum())
        row = {"eps": eps, "new": count}
        for r in RANKS:
            row[f"rank{r}"] = float((ranks == r).sum()) / count if count else 0.0
        row["other"] = float((ranks > RANKS[-1]).sum()) / count if count else 0.0
        rows.append(row)
        fooled_before |= fooled
    return rows


def attack_predictions(model, dataset, index, attack, eps_list, device):
    """[(eps, predictions)] of `attack` (the registry's, released settings)."""
    x, y = dataset.batch(index, device)
    out = []
    for eps in eps_list:
        torch.manual_seed(0)
        atk = released(attack, model, eps, dataset.num_classes)
        adv = torch.cat([atk(xb, yb) for xb, yb in zip(x.split(500), y.split(500))])
        with torch.no_grad():
            out.append((eps, model(adv).argmax(1).cpu()))
    return out


def plot_motivation(stats, title, path):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(stats), figsize=(6.2 * len(stats), 3.8), squeeze=False)
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#999999"]
    for ax, (attack, rows) in zip(axes[0], stats.items()):
        xs = range(len(rows))
        bottom = [0.0] * len(rows)
        for key, color in zip([f"rank{r}" for r in RANKS] + ["other"], colors):
            vals = [100 * r[key] for r in rows]
            label = "lower" if key == "other" else f"{key[4:]}{'nd' if key == 'rank2' else 'rd' if key == 'rank3' else 'th'}"
            ax.bar(xs, vals, bottom=bottom, color=color, label=label, width=0.7)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(list(xs), [f"{r['eps']:g}" for r in rows], rotation=45, fontsize=7)
        ax.set_xlabel("eps")
        ax.set_ylabel("share of new successful attacks (%)")
        ax.set_ylim(0, 100)
        right = ax.twinx()
        right.plot(list(xs), [r["new"] for r in rows], color="black", marker="o")
        right.set_ylabel("new successful attacks (count)")
        ax.set_title(f"{attack.upper()} on {title}")
        ax.legend(title="class rank", fontsize=7, title_fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.16, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def tsne(points, seed):
    from sklearn.manifold import TSNE
    return TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(points.numpy())


@torch.no_grad()
def embeddings(model, x, device):
    model.eval()
    return torch.cat([model.embed(b.to(device)).float().cpu() for b in x.split(500)])


def scatter(ax, xy, labels, marker="o", size=4, alpha=0.7):
    import matplotlib.pyplot as plt
    ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=plt.get_cmap("tab10"), vmin=0, vmax=9,
               s=size, marker=marker, alpha=alpha, linewidths=0.6)
    ax.set_xticks([])
    ax.set_yticks([])


class Steps:
    """Numbered progress lines: step i/total, counted as they come."""

    def __init__(self, total):
        self.total, self.done = total, 0

    def __call__(self, msg):
        self.done += 1
        say(f"step {self.done}/{self.total}: {msg}")


def load_pair(s):
    """(models {"CE", "PC"}, dataset name, model name, test set, device): both checkpoints of one dataset."""
    states = {"CE": load_checkpoint(s["CE"]), "PC": load_checkpoint(s["PC"])}
    metas = {k: st["meta"] for k, st in states.items()}
    if metas["CE"]["dataset"] != metas["PC"]["dataset"]:
        raise UserError(f"the checkpoints are of different datasets: {metas['CE']['dataset']} "
                        f"and {metas['PC']['dataset']}")
    dataset = metas["CE"]["dataset"]
    device = resolve_device(s["DEVICE"])
    models = {k: model_from_checkpoint(st, s[k]).to(device).eval() for k, st in states.items()}
    test_set = get_dataset(dataset, False, s["DATA_DIR"] or metas["CE"]["settings"].get("DATA_DIR", "./data"))
    return models, dataset, metas["CE"]["model"], test_set, device


def motivation(model, test_set, index, dataset, s, device, step):
    """{attack: rows}: where the new successful FGSM / MIM attacks on the CE model land, per eps."""
    clean_logits = predict(model, test_set, device, index=index)
    labels = test_set.labels[index]
    grids = {"fgsm": grid(s["FGSM_EPS"], dataset, (0.01, 0.1), (0.003, 0.03)),
             "mim": grid(s["MIM_EPS"], dataset, (0.005, 0.05), (0.001, 0.01))}
    stats = {}
    for attack, eps_list in grids.items():
        step(f"{attack.upper()} on the CE model at {len(eps_list)} eps, {len(index)} images")
        preds = attack_predictions(model, test_set, index, attack, eps_list, device)
        stats[attack] = new_attack_ranks(clean_logits, labels, preds)
    return stats


def plot_effect(gaps, clean_xy, y, title, path):
    """The probability gaps as bars beside the t-SNE of each model's clean embeddings."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    bars = axes[0].bar(list(gaps), list(gaps.values()), color=["#7f7f7f", "#1f77b4"])
    for bar, value in zip(bars, gaps.values()):
        axes[0].text(bar.get_x() + bar.get_width() / 2, value, f"{value:.3f}", ha="center", va="bottom")
    axes[0].set_ylabel("mean p_y - max_{j != y} p_j")
    axes[0].set_title(f"probability gap, {title}")
    for ax, k in zip(axes[1:], clean_xy):
        scatter(ax, clean_xy[k], y)
        ax.set_title(f"t-SNE of the embedding, {k}")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_tsne_attacks(models, x, y, classes, clean_xy, eps, title, path, s, device, step):
    """The paper's four panels: per model (rows CE, PC) the clean test images alone, and with
    their successful FGSM attacks. Returns {model: successful attacks}."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    fooled_counts = {}
    for row, (k, model) in enumerate(models.items()):
        adv = released("fgsm", model, eps, classes)(x, y)
        with torch.no_grad():
            ok = (model(x).argmax(1) == y) & (model(adv).argmax(1) != y)
        fooled_counts[k] = int(ok.sum())
        step(f"t-SNE of {k} clean + {fooled_counts[k]} successful FGSM attacks (eps {eps:g})")
        both = tsne(torch.cat([embeddings(model, x, device), embeddings(model, adv[ok], device)]), s["SEED"])
        scatter(axes[row][0], clean_xy[k], y.cpu())
        axes[row][0].set_title(f"{k}: clean test images")
        scatter(axes[row][1], both[:len(x)], y.cpu(), size=3, alpha=0.35)
        scatter(axes[row][1], both[len(x):], y[ok].cpu(), marker="x", size=14, alpha=0.9)
        axes[row][1].set_title(f"{k}: clean (dots) + successful FGSM eps {eps:g} (crosses)")
    fig.suptitle(f"t-SNE of the penultimate layer, {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return fooled_counts


def summary(s, title, accs, gaps, stats, n_motivation, eps, n_tsne, fooled_counts):
    """figures.md: the numbers behind the pictures."""
    lines = [f"# Figures for {title}", "",
             f"Checkpoints: CE `{s['CE']}`, PC `{s['PC']}`.", "",
             "| model | clean accuracy | mean probability gap |", "|---|---|---|"]
    lines += [f"| {k} | {100 * accs[k]:.2f}% | {gaps[k]:.4f} |" for k in accs]
    lines += ["", f"Motivation (CE model, {n_motivation} test images): new successful attacks per eps "
              "and the share landing on the clean prediction's k-th most probable class.", "",
              "| attack | eps | new | 2nd | 3rd | 4th | 5th | lower |", "|---|---|---|---|---|---|---|---|"]
    for attack, rows in stats.items():
        lines += [f"| {attack} | {r['eps']:g} | {r['new']} | " +
                  " | ".join(f"{100 * r[key]:.1f}%" for key in ("rank2", "rank3", "rank4", "rank5", "other"))
                  + " |" for r in rows]
    lines += ["", f"t-SNE panels: successful FGSM (eps {eps:g}) attacks among {n_tsne} images: " +
              ", ".join(f"{k} {v}" for k, v in fooled_counts.items()), ""]
    return "\n".join(lines)


def main(argv):
    s, extra = parse_settings(settings_of(globals()), argv)
    check_settings(s, RANGES)
    if extra or not s["CE"] or not s["PC"]:
        raise UserError("give both checkpoints: python studies/make_figures.py --ce=CE.pt --pc=PC.pt")
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd
    models, dataset, model_name, test_set, device = load_pair(s)
    prefix, title = os.path.join(s["OUT_DIR"], f"{dataset}-{model_name}"), f"{dataset} {model_name}"
    os.makedirs(s["OUT_DIR"], exist_ok=True)
    perm = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(s["SEED"]))
    step = Steps(7)
    index = perm[:s["N_MOTIVATION"]].sort().values  # 1. motivation: where new attacks on CE land
    stats = motivation(models["CE"], test_set, index, dataset, s, device, step)
    plot_motivation(stats, title, f"{prefix}-motivation.png")
    pd.concat([pd.DataFrame(rows).assign(attack=a) for a, rows in stats.items()]).to_csv(
        f"{prefix}-motivation.csv", index=False)
    step("probability gaps on the whole test set")  # 2. effect: gaps and t-SNE of the embeddings
    accs, gaps = {}, {}
    for k, m in models.items():
        accs[k], gaps[k] = evaluate(m, test_set, device)
    t_index = perm[:s["N_TSNE"]].sort().values
    x, y = test_set.batch(t_index, device)
    clean_xy = {}
    for k in models:
        step(f"t-SNE of {len(t_index)} clean {k} embeddings")
        clean_xy[k] = tsne(embeddings(models[k], x, device), s["SEED"])
    plot_effect(gaps, clean_xy, y.cpu(), title, f"{prefix}-effect.png")
    eps = s["TSNE_EPS"] or (0.1 if dataset in MNIST_FAMILY else 8 / 255)  # 3. the paper's four panels
    fooled = plot_tsne_attacks(models, x, y, test_set.num_classes, clean_xy, eps, title,
                               f"{prefix}-tsne.png", s, device, step)
    text = summary(s, title, accs, gaps, stats, len(index), eps, len(t_index), fooled)
    atomic_write(f"{prefix}-figures.md", lambda f: f.write(text.encode()))
    say(f"written: {prefix}-motivation.png, -effect.png, -tsne.png, -figures.md, -motivation.csv")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
