"""The evaluation under adv_testing.py: checkpoints and your own models loaded and fingerprinted,
the attack jobs run (cheap attacks on N images, costly ones on the first N_STRONG) with one job
cache, the per-sample worst case, the sanity checks that expose masking and weak attacks, and the
table, plot and log written. adv_testing.py holds the settings a user edits and their ranges.
"""
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from collections import namedtuple

import torch
import torch.distributed as dist
import torchattacks as ta
from torch import nn
from tqdm import tqdm

from models import build_model

from . import attacks as registry
from .checkpoints import (append_line, atomic_write, is_project_checkpoint, load_weights, make_dirs,
                          model_from_checkpoint, read_weights_file)
from .cli import parse_value
from .data import MNIST_FAMILY, dataset_info, get_dataset
from .errors import UserError
from .metrics import mcnemar, wilson
from .indicators import Watch, merge
from .indicators import warnings as indicator_warnings
from .model_checks import model_checks
from .runtime import start_processes

# AutoAttack's budgets. standard is the reference code's (Croce & Hein, version "standard"): APGD-CE
# and APGD-T 100 iterations, FAB-T 100 per target, Square 5000 queries on its fixed schedule (p halves
# at query 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000: resc_schedule=False there; torchattacks
# rescales it to the number of queries, which at 5000 queries halves p twice as early).
# Both budgets: one restart, and APGD-T / FAB-T target the 9 most likely other classes (as the
# reference; torchattacks alone would target all K-1).
# The standard budget also adds the adaptive suite (attacks aimed at the defenses' own objectives) to
# the default attacks: a table of record holds them; --attacks=... given too wins.
BUDGETS = {"quick": dict(APGD_STEPS=10, FAB_STEPS=10, SQUARE_QUERIES=5000, SQUARE_SCHEDULE="rescaled"),
           "standard": dict(APGD_STEPS=100, FAB_STEPS=100, SQUARE_QUERIES=5000, SQUARE_SCHEDULE="reference",
                            ATTACKS=["released", "autoattack", "adaptive"], N_STRONG=1000)}
NOT_IN_LABEL = ("ATTACKS", "N_STRONG")  # each attack is its own row, and every row says its n


def budget_label(s):
    """The budget a run used: BUDGET where every iteration count it sets is as that budget says, else
    custom (the attacks it adds and the images it takes do not count: NOT_IN_LABEL)."""
    return s["BUDGET"] if all(s[k] == v for k, v in BUDGETS[s["BUDGET"]].items() if k not in NOT_IN_LABEL) else "custom"


EVALUATION = tuple(a for a in registry.ATTACKS if a not in registry.TRAINING_ONLY)  # attacks on offer
DEFAULT_EPS = {"mnist": [0.02, 0.05, 0.1, 0.2, 0.3], "32px": [1 / 255, 2 / 255, 4 / 255, 8 / 255],
               "tiny-imagenet": [0.005, 0.01, 0.015]}
# --norm=l2: the usual radii (MNIST 2.0, Fashion-MNIST 1.5, 32-px sets 0.5) within each grid, and the
# radius at which PGD must leave about 0 (the large-eps check; LARGE_EPS is linf's)
DEFAULT_EPS_L2 = {"mnist": [0.5, 1.0, 1.5, 2.0], "32px": [0.125, 0.25, 0.5], "tiny-imagenet": [0.25, 0.5, 1.0]}
LARGE_EPS_L2 = {"mnist": 10.0, "32px": 5.0, "tiny-imagenet": 10.0}
STATUS = {True: "PASS ", False: "", None: "NOT RUN "}

def expand(names, norm="linf"):
    """Attack and suite names -> attack names, each once, in the order given (a suite under l2: its
    attacks that have an L2 version; an attack named alone that has none is a one-line error)."""
    out = []
    for name in names:
        if name not in registry.SUITES and norm == "l2" and name not in registry.L2:
            raise UserError(f"--attacks: {name} has no L2 version (--norm=l2 offers {', '.join(registry.L2)})")
        out += registry.suite(name, norm) if name in registry.SUITES else [name]
    return list(dict.fromkeys(out))


def family(dataset):
    return "mnist" if dataset in MNIST_FAMILY else "tiny-imagenet" if dataset == "tiny-imagenet" else "32px"


def default_eps(dataset, norm="linf"):
    return (DEFAULT_EPS if norm == "linf" else DEFAULT_EPS_L2)[family(dataset)]


def knobs_of(eps, num_classes, s):
    """The settings `s` as the registry's Knobs at one eps: the released step rule (eps / STEPS),
    MIM's decay 1.0, the budget's iterations and queries."""
    return registry.Knobs(
        steps=s["STEPS"], step=registry.STEP_RULES["released"](eps, s["STEPS"]), decay=1.0,
        classes=num_classes, seed=s["SEED"], apgd_steps=s["APGD_STEPS"], apgd_restarts=s["APGD_RESTARTS"],
        fab_steps=s["FAB_STEPS"], fab_restarts=s["FAB_RESTARTS"], square_queries=s["SQUARE_QUERIES"],
        square_schedule=s["SQUARE_SCHEDULE"], spsa_iters=s["SPSA_ITERS"], cw_steps=s["CW_STEPS"],
        surrogate=s.get("SURROGATE_ID", ""), norm=s["NORM"])


def build_attack(name, model, eps, num_classes, s):
    """The registry's attack `name` for one eps, with the evaluation's settings `s`."""
    if name not in EVALUATION:
        raise UserError(f"unknown attack {name!r}; attacks: {', '.join(EVALUATION)}")
    return registry.build(name, model, eps, knobs_of(eps, num_classes, s))


def attack_job(model, dataset, index, name, eps, s, device, rank=0, world=1, indicators=None):
    """Per-sample robustness (bool, on the CPU) of `model` under attack `name` at `eps` on the
    images `index` ("clean": no attack): right on the clean image and on the attacked one. As in
    AutoAttack, an image the model already gets wrong is not attacked (it counts as not robust).
    The images go in blocks of BATCH_SIZE, each attacked with its own seed, so the result does not
    depend on how blocks are shared out: this process takes blocks rank, rank + world, ... and the
    others are gathered from the other processes.
    Every adversarial batch is checked to lie in the eps ball and in [0, 1]. `indicators` (a list)
    gets each block's indicators of attack failure (indicators.py: the attack sees the model through
    a Watch, which changes nothing it computes)."""
    model.eval()
    layout = torch.channels_last if s["CHANNELS_LAST"] else torch.contiguous_format
    mine = []
    blocks = index.split(s["BATCH_SIZE"])
    for number in range(rank, len(blocks), world):
        x, y = dataset.batch(blocks[number], device)
        x = x.contiguous(memory_format=layout)
        with torch.no_grad():
            right = model(x).argmax(1) == y
        if name != "clean" and right.any():
            x, y = x[right], y[right]
            watch = Watch(model, x, y, eps, s["NORM"])
            attack = build_attack(name, watch, eps, dataset.num_classes, s)
            torch.manual_seed(s["SEED"] * 1_000_003 + number)
            adv = attack(x, y)
            if registry.distance(adv, x, s["NORM"]).max() > eps + 1e-5 or adv.min() < -1e-6 or adv.max() > 1 + 1e-6:
                raise RuntimeError(f"{name} left the eps={eps} ball or [0, 1]")
            adv = adv.clamp(0, 1)  # rounding (SPSA can return -5e-10)
            with torch.no_grad():
                still = model(adv).argmax(1) == y
            right[right.clone()] = still
            if indicators is not None:
                indicators.append(watch.report(still))
        mine.append((number, right.cpu()))
    if world > 1:
        parts = [None] * world
        dist.all_gather_object(parts, mine)
        mine = [item for part in parts for item in part]
    mine.sort(key=lambda item: item[0])
    return torch.cat([t for _, t in mine]) if mine else torch.zeros(0, dtype=torch.bool)


def worst_case(correct, eps_list, attacks=None):
    """Per eps: a sample is robust only if it is right on clean input and under every attack (of
    `attacks`, default all) at that eps; taken over the images every one of them was run on."""
    worst = {}
    for eps in eps_list:
        parts = [v for (a, e), v in correct.items()
                 if e == eps and a not in ("clean", "worst") and (attacks is None or a in attacks)]
        n = min([len(v) for v in parts] + [len(correct[("clean", 0.0)])])
        alive = correct[("clean", 0.0)][:n].clone()
        for right in parts:
            alive &= right[:n]
        worst[("worst", eps)] = alive
    return worst


def noise(p, n):
    """Two binomial standard errors of an accuracy p measured on n images (at least 1/n)."""
    n = max(n, 1)
    return max(1.0 / n, 2 * math.sqrt(p * (1 - p) / n))


def _rises_with_eps(acc, n, names, eps_all):
    bad = [f"{a}: {acc[(a, e1)]:.1%} at eps {e1:.4g} -> {acc[(a, e2)]:.1%} at {e2:.4g}"
           for a in names for e1, e2 in zip(eps_all, eps_all[1:])
           if (a, e1) in acc and (a, e2) in acc and acc[(a, e2)] > acc[(a, e1)] + noise(acc[(a, e2)], n)]
    return (not bad, "accuracy falls as eps grows" if not bad else
            "WARNING accuracy rises with eps (" + "; ".join(bad) + ")")


def _large_eps(large_eps, large_acc):
    ok = large_acc <= 0.02
    return (ok, f"PGD at eps {large_eps:g} leaves {large_acc:.1%} accuracy" +
            ("" if ok else " -- WARNING: it should reach about 0; gradients may be masked"))


def _single_beats_iterative(acc, n, names, eps_all):
    iterative = [a for a in names if registry.ATTACKS[a].iterative and registry.ATTACKS[a].white]
    if "fgsm" not in names or not iterative:
        return None
    bad = []
    for e in eps_all:
        iters = {it: acc[(it, e)] for it in iterative if (it, e) in acc}
        if iters and ("fgsm", e) in acc and min(iters.values()) > acc[("fgsm", e)] + noise(acc[("fgsm", e)], n):
            best = min(iters, key=iters.get)
            bad.append(f"best iterative {best} {iters[best]:.1%} > fgsm {acc[('fgsm', e)]:.1%} at eps {e:.4g}")
    return (not bad, "an iterative attack is at least as strong as FGSM at every eps" if not bad
            else "WARNING single-step beats iterative (" + "; ".join(bad) + "): gradients "
            "look masked, or the iterative attacks are too weak (raise STEPS)")


def _black_beats_white(acc, n, names, eps_all):
    blacks = [a for a in names if not registry.ATTACKS[a].white]
    whites = [a for a in names if registry.ATTACKS[a].white]
    if not (blacks and whites):
        return (None, "black-box check: add square or spsa to ATTACKS to test for gradient masking")
    bad = []
    for e in eps_all:
        white = [acc[(w, e)] for w in whites if (w, e) in acc]
        for bb in blacks:
            if white and (bb, e) in acc and acc[(bb, e)] < min(white) - noise(min(white), n):
                bad.append(f"{bb} {acc[(bb, e)]:.1%} < best white-box {min(white):.1%} at eps {e:.4g}")
    return (not bad, "black-box attacks are not stronger than white-box ones" if not bad else
            "WARNING black-box beats white-box (" + "; ".join(bad) + "): gradients look "
            "masked; white-box figures overstate robustness (or the white-box attacks are "
            "too weak here: raise STEPS)")


def _released_overstates(suites, n):
    if not (suites and all(k in suites for k in ("released", "autoattack"))):
        return (None, "released-vs-AutoAttack check: run both suites (--attacks=released,autoattack)")
    rel, aa = suites["released"], suites["autoattack"]
    bad = [f"WARNING the released attacks overstate robustness by {100 * (rel[e] - aa[e]):.1f} "
           f"points at eps {e:.4g} ({rel[e]:.1%} against AutoAttack's {aa[e]:.1%})"
           for e in sorted(rel) if rel[e] - aa[e] > noise(aa[e], n) + 1e-9]
    return (not bad, "the released attacks are not weaker than AutoAttack" if not bad else "; ".join(bad))


def sanity_checks(acc, n, large_eps=None, large_acc=None, suites=None):
    """The sanity checks of Carlini et al. (2019) (README: attacking checkpoints) on accuracies
    {(attack, eps): float}, all measured on the same n images: a list of (ok, sentence), ok True
    (PASS), False (the sentence starts with WARNING) or None (not run). Differences within two
    binomial standard errors count as noise.
    suites: {"released": {eps: worst acc}, "autoattack": {eps: worst acc}} for the last check."""
    names = sorted({a for a, _ in acc if a not in ("clean", "worst")})
    eps_all = sorted({e for a, e in acc if a not in ("clean", "worst")})
    checks = [_rises_with_eps(acc, n, names, eps_all),
              _large_eps(large_eps, large_acc) if large_acc is not None else None,
              _single_beats_iterative(acc, n, names, eps_all),
              _black_beats_white(acc, n, names, eps_all),
              _released_overstates(suites, n)]
    return [c for c in checks if c is not None]


def label_of(path):
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.splitext(os.path.basename(path))[0]}"


def row_of(label, attack, eps, right):
    n, k = len(right), int(right.sum())
    low, high = wilson(k, n)
    return (label, attack, eps, round(k / max(n, 1), 6), round(low, 6), round(high, 6), n)


def comparisons(per_sample, labels):
    """Markdown lines: for each pair of checkpoints and eps, the worst-case difference and its exact
    McNemar p-value on the same images (beyond noise where p < 0.05)."""
    lines = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            for key in sorted(k for k in per_sample[a] if k[0] == "worst"):
                ra, rb = per_sample[a][key], per_sample[b][key]
                p = mcnemar(ra, rb)
                diff = 100 * (ra.float().mean() - rb.float().mean()).item()
                verdict = "beyond noise" if p < 0.05 else "within noise"
                lines.append(f"| {a} - {b} | {key[1]:.4g} | {diff:+.1f} | {p:.3g} | {verdict} |")
    if not lines:
        return ""
    return ("\nWorst-case differences between checkpoints (same images; exact McNemar test, "
            "beyond noise where p < 0.05):\n\n| pair | eps | difference (points) | p | verdict |\n"
            "|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


_COLUMNS = ["checkpoint", "attack", "eps", "accuracy", "ci_low", "ci_high", "n"]


def budget_note(s):
    """The sentence a table opens with: which AutoAttack budget its rows were measured at."""
    settings = (f"APGD-CE/APGD-T {s['APGD_STEPS']} iterations, FAB-T {s['FAB_STEPS']} per target, "
                f"Square {s['SQUARE_QUERIES']} queries ({s['SQUARE_SCHEDULE']} schedule)")
    label = budget_label(s)
    threat = "Threat model: L2 (eps is the L2 radius).\n\n" if s["NORM"] == "l2" else ""
    if label == "standard":
        return f"{threat}AutoAttack budget: standard, the reference code's ({settings}).\n\n"
    return threat + (f"**AutoAttack ran at a reduced budget ({label}: {settings}); it may overstate robustness "
            f"by a few points. Tables of record use `--budget=standard` (the reference's 100 iterations).**\n\n")


def verdicts(frame, labels):
    """Per model: each suite's worst case beside the overall one at every eps, and one sentence on
    what the stronger suites change (points, largest over eps)."""
    out = []
    for label in labels:
        part = frame[frame.checkpoint == label]
        worst = {round(r.eps, 9): r.accuracy for r in part[part.attack == "worst"].itertuples()}
        suites = {name: {round(r.eps, 9): r.accuracy for r in part[part.attack == f"worst-{name}"].itertuples()}
                  for name in registry.SUITES}
        suites = {name: acc for name, acc in suites.items() if acc}
        if not worst or not suites:
            continue
        cells = "; ".join(f"eps {e:g}: " + ", ".join(f"{n} {100 * a[e]:.1f}" for n, a in suites.items() if e in a)
                          + f", worst {100 * w:.1f}" for e, w in sorted(worst.items()))
        said = []
        for name, weaker in (("released", "the released attacks"), ("autoattack", "AutoAttack")):
            if name in suites:
                gap, e = max((suites[name][e] - w, e) for e, w in worst.items() if e in suites[name])
                said.append(f"{weaker} overstate{'s' if name == 'autoattack' else ''} it by up to "
                            f"{100 * gap:.1f} points (eps {e:g})" if gap > 0 else f"{weaker} miss{'es' if name == 'autoattack' else ''} nothing")
        sentence = "; ".join(said)
        out.append(f"- {label}: {cells} (%). " + sentence[:1].upper() + sentence[1:] + ".")
    return ("\n\nVerdict per model (each suite's worst case, and the worst over all attacks):\n\n" + "\n".join(out)) if out else ""


def markdown(frame, labels, checks, extra, s):
    """The table (one column per checkpoint, 95 % intervals), opening with the budget, then each
    checkpoint's sanity checks and `extra` (the comparisons)."""
    cell = frame.assign(text=[f"{100 * a:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
                              for a, lo, hi in zip(frame.accuracy, frame.ci_low, frame.ci_high)])
    wide = cell.pivot_table(index=["attack", "eps", "n", "budget"], columns="checkpoint", values="text",
                            aggfunc="first", sort=False)[labels]
    lines = ["| attack | eps | n | budget | " + " | ".join(labels) + " |",
             "|---|---|---|---|" + "---|" * len(labels)]
    for (attack, eps, n, budget), values in wide.iterrows():
        eps_text = "-" if attack == "clean" else f"{eps:.4g}"
        name = f"**{attack}**" if attack == "worst" else attack
        lines.append(f"| {name} | {eps_text} | {n} | {budget} | " + " | ".join(values) + " |")
    return (budget_note(s) + "Robust accuracy (%) with 95 % Wilson intervals; n: test images the row was measured on. "
            "`worst`: a sample counts only if it survives every attack at that eps (on the images "
            "every attack ran on); `worst-released`, `worst-autoattack`: the same over one suite.\n\n" + "\n".join(lines) + "\n\nSanity checks (on the images every "
            "attack ran on):\n\n" + "\n".join(f"- {label}: {STATUS[ok]}{msg}"
                                               for label in labels for ok, msg in checks[label])
            + verdicts(frame, labels) + "\n" + extra)


def plot(frame, labels):
    """One panel per attack (and worst case): accuracy against eps, clean at eps 0, intervals as bands."""
    import matplotlib.pyplot as plt
    attacks = [a for a in dict.fromkeys(frame["attack"]) if a not in ("clean", "pgd-large-eps")]
    cols = min(len(attacks), 5)
    rows_n = math.ceil(len(attacks) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.0 * cols, 2.8 * rows_n), squeeze=False)
    for ax, attack in zip(axes.flat, attacks):
        for label in labels:
            part = frame[(frame["attack"] == attack) & (frame["checkpoint"] == label)]
            clean = frame[(frame["attack"] == "clean") & (frame["checkpoint"] == label)]
            eps = [0.0] + part["eps"].tolist()
            acc = [100 * clean.accuracy.iloc[0]] + (100 * part.accuracy).tolist()
            low = [100 * clean.ci_low.iloc[0]] + (100 * part.ci_low).tolist()
            high = [100 * clean.ci_high.iloc[0]] + (100 * part.ci_high).tolist()
            line, = ax.plot(eps, acc, marker="o", ms=3, label=label)
            ax.fill_between(eps, low, high, color=line.get_color(), alpha=0.15)
        ax.set_title(attack, fontweight="bold" if attack == "worst" else None)
        ax.set_xlabel("eps")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_outputs(rows, labels, checks, out, extra, s):
    """CSV (long form, a `budget` column on every row), Markdown table opening with the budget, and
    PNG plot, each written to a temporary name first. Returns the Markdown."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    frame = pd.DataFrame(rows, columns=_COLUMNS).assign(budget=budget_label(s))
    text = markdown(frame, labels, checks, extra, s)
    base = os.path.splitext(out)[0]
    make_dirs(os.path.dirname(os.path.abspath(out)))
    fig = plot(frame, labels)
    atomic_write(out, lambda f: f.write(frame.to_csv(index=False).encode()))
    atomic_write(base + ".md", lambda f: f.write(text.encode()))
    atomic_write(base + ".png", lambda f: fig.savefig(f, dpi=130, format="png"))
    plt.close(fig)
    return text


class LogitsOnly(nn.Module):
    """A user model whose forward returns (logits, ...) -- as the released models do -- seen as
    one that returns the logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def parse_arch_args(text):
    """'a=1,b=2.5,c=text,d=true' -> {"a": 1, "b": 2.5, "c": "text", "d": True}."""
    kwargs = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        for kind in (int, float):
            try:
                kwargs[key] = kind(value)
                break
            except ValueError:
                pass
        else:
            kwargs[key] = {"true": True, "false": False}.get(value.lower(), value)
    return kwargs


def build_user_model(spec, args_text):
    """The module that ClassName (a class, or a function returning a module, such as
    fast_adversarial's mnist_net) from path/to/file.py gives (--arch), with --arch_args as keywords."""
    path, _, class_name = spec.rpartition(":")
    if not os.path.isfile(path):
        raise UserError(f"--arch={spec}: no such file {path}")
    try:
        module_spec = importlib.util.spec_from_file_location(f"user_arch_{class_name}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise UserError(f"--arch={spec}: importing {path} failed: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if not callable(getattr(module, class_name, None)):
        raise UserError(f"--arch={spec}: {path} defines no class or function {class_name}")
    try:
        model = getattr(module, class_name)(**parse_arch_args(args_text))
    except Exception as err:
        raise UserError(f"--arch={spec}: {class_name}({args_text}) failed: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--arch={spec}: {class_name}({args_text}) returned a {type(model).__name__}, "
                        f"not a torch.nn.Module")
    return model


Loaded = namedtuple("Loaded", "model dataset fingerprint data_dir")
_MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")  # the repository's models/


def code_digest(model, extra_files=()):
    """sha1 of the code that computes the model's outputs: the project's models/ sources, every
    source file that defines a class the model is built of (torch's own: its version), and
    `extra_files` (--arch's file). An edited forward() changes it."""
    files = {os.path.join(_MODELS_DIR, f) for f in os.listdir(_MODELS_DIR) if f.endswith(".py")}
    files.update(os.path.abspath(f) for f in extra_files)
    for module in model.modules():
        for cls in type(module).__mro__:
            source = getattr(sys.modules.get(cls.__module__), "__file__", None)
            if source and not cls.__module__.split(".")[0] in ("torch", "builtins"):
                files.add(os.path.abspath(source))
    h = hashlib.sha1(torch.__version__.encode())
    for name in sorted(files):
        h.update(name.encode())
        with open(name, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def check_weights(path, weights, meta, s):
    """One-line errors for a file that holds no tensors, flags that contradict its checkpoint, and
    weights that are not finite."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UserError(f"{path}: neither a checkpoint of this project nor a state_dict of tensors")
    for flag, key in (("DATASET", "dataset"), ("MODEL", "model")):
        if meta and s[flag] and s[flag] != meta.get(key):
            raise UserError(f"{path} is a checkpoint of {meta.get('model')} on {meta.get('dataset')}: "
                            f"--{flag.lower()}={s[flag]} contradicts it (leave --{flag.lower()} empty)")
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{path}: its weights are not finite ({len(bad)} of {len(weights)} tensors hold "
                        f"NaN or inf, first {bad[0]}): refusing to evaluate it")


def load_model(path, s):
    """Loaded(model, dataset name, fingerprint, data dir) for a file: a checkpoint of this project,
    or a plain state_dict with --model (a project architecture) or --arch (your class), and
    --dataset. The fingerprint (the bytes of the weights, the model's code, --arch and its
    arguments) keys the cache. Flags that contradict the checkpoint and weights that are not
    finite are one-line errors."""
    state = read_weights_file(path)
    meta = state.get("meta") if is_project_checkpoint(state) else None
    weights = state["model"] if meta else state
    check_weights(path, weights, meta, s)
    dataset = (meta or {}).get("dataset") or s["DATASET"]
    if not dataset:
        raise UserError(f"{path} does not name its dataset: add --dataset=NAME")
    with open(path, "rb") as f:
        fingerprint = hashlib.sha1(f.read()).hexdigest()
    data_dir = (meta or {}).get("settings", {}).get("DATA_DIR", "./data")
    if s["ARCH"]:
        model = build_user_model(s["ARCH"], s["ARCH_ARGS"])
        load_weights(model, weights, path, dict(model=s["ARCH"], dataset=dataset))
        model, extra = LogitsOnly(model), (s["ARCH"].rpartition(":")[0],)
        fingerprint += s["ARCH"] + s["ARCH_ARGS"]
    elif meta:
        model, extra = model_from_checkpoint(state, path), ()
    elif not s["MODEL"]:
        raise UserError(f"{path} is a plain state_dict: name its architecture with --model=NAME "
                        f"(one of this project's) or --arch=FILE.py:ClassName")
    else:
        channels, size, classes = dataset_info(dataset)
        model, extra = build_model(s["MODEL"], channels, size, classes), ()
        load_weights(model, weights, path, dict(model=s["MODEL"], dataset=dataset, num_classes=classes))
        fingerprint += s["MODEL"]
    return Loaded(model, dataset, fingerprint + code_digest(model, extra), data_dir)


_CACHE_VERSION = 4  # 2: images the model gets wrong are not attacked; 3: keys hold the data and
#                    code; 4: keys hold the knobs the attack reads (attacks.py)


def job_key(fingerprint, name, eps, data, classes, s, device):
    """What a job's result depends on: the model (weights and code: `fingerprint`), the attack and
    the settings it reads, the test images and labels themselves (`data`: their digest, with the
    dataset's name), how they are batched, laid out and seeded, and the library versions."""
    knobs = {} if name == "clean" else registry.key_material(name, knobs_of(eps, classes, s))
    material = dict(model=fingerprint, attack=name, eps=repr(eps), device=device.split(":")[0],
                    version=_CACHE_VERSION, data=data, torchattacks=ta.__version__, torch=torch.__version__,
                    budget=budget_label(s), targets=registry.TARGETS, knobs=knobs,
                    **{k: s[k] for k in ("BATCH_SIZE", "SEED", "CHANNELS_LAST")})
    return hashlib.sha1(json.dumps(material, sort_keys=True).encode()).hexdigest()


def read_indicators(path):
    """The indicators kept beside a cached job (None when it has none, or they are damaged)."""
    try:
        with open(path[:-len(".pt")] + ".json") as f:
            got = json.load(f)
        return got if {"silent", "rising", "passes"} <= set(got) else None
    except (OSError, ValueError, TypeError):
        return None


def read_cached(path, n):
    """A cached job result if it is what a job returns (a 1-D bool tensor of n values), else None
    (missing, damaged or foreign entries are recomputed)."""
    if not os.path.exists(path):
        return None
    try:
        value = torch.load(path, weights_only=True)
    except Exception:
        return None
    ok = isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.shape == (n,)
    return value if ok else None


Job = namedtuple("Job", "model row attack eps")  # model number, table row, attack name, eps


def plan_jobs(n_models, attacks, eps_list, large_eps=None):
    """Every job of a table: per model clean, each attack at each eps, and the large-eps PGD check."""
    rows = [("clean", "clean", 0.0)] + [(a, a, e) for a in attacks for e in eps_list]
    rows += [("pgd-large-eps", "pgd", large_eps)] if large_eps is not None else []
    return [Job(i, *row) for i in range(n_models) for row in rows]


def images_of(job, index, count, n_strong):
    """The one subset rule: clean accuracy on all of `index`, the costly attacks (and the large-eps
    check) on its first `n_strong` images, the cheap ones on its first `count`."""
    if job.attack == "clean":
        return index
    costly = job.row == "pgd-large-eps" or registry.ATTACKS[job.attack].costly
    return index[:n_strong] if costly else index[:count]


def shared_lookup(path, n, s, is_main):
    """The cached result at `path` (None when absent or FRESH): rank 0 reads it, the other ranks
    receive it."""
    cached = read_cached(path, n) if is_main and not s["FRESH"] else None
    if dist.is_initialized():
        box = [cached]
        dist.broadcast_object_list(box, src=0)
        cached = box[0]
    return cached


def store(path, right, found):
    """A computed result into the cache, then its indicators of attack failure (KEY.json) if any: a
    job killed in between has no indicators, no more."""
    atomic_write(path, lambda f: torch.save(right, f))
    if found is not None:
        atomic_write(path[:-len(".pt")] + ".json", lambda f: f.write(json.dumps(found).encode()))


def run_jobs(models, test_set, jobs, index, count, n_strong, s, device, rank=0, world=1,
             fingerprints=None, labels=None, cache_dir=None, log_path=None, indicators=None):
    """{(model, row, eps): per-sample correctness} for every job. With `cache_dir` each result is
    read from the job cache when its key (job_key) is there, and stored there when computed; a
    line per job goes to `log_path` (and stdout when it is not a terminal). cache_dir=None: every
    job is computed (tests, bench). Under torchrun rank 0 reads and writes the cache. `indicators`
    (a dict) gets each attack job's indicators of attack failure, kept beside its cache entry
    (KEY.json; a job cached before them has none)."""
    results, digests, is_main = {}, {}, rank == 0
    labels = labels or [str(i) for i in range(len(models))]
    for job in tqdm(jobs, desc="jobs", disable=not (is_main and log_path and sys.stderr.isatty())):
        part = images_of(job, index, count, n_strong)
        if len(part) not in digests:  # the images and labels themselves, not their indices
            digests[len(part)] = test_set.digest(part)
        path, cached, start = None, None, time.time()
        if cache_dir is not None:
            key = job_key(fingerprints[job.model], job.attack, job.eps, digests[len(part)], test_set.num_classes,
                          s, device)
            path = os.path.join(cache_dir, key + ".pt")
            cached = shared_lookup(path, len(part), s, is_main)
        blocks = []
        right = cached if cached is not None else attack_job(models[job.model], test_set, part, job.attack,
                                                             job.eps, s, device, rank, world, blocks)
        found = None if job.attack == "clean" else merge(blocks) if cached is None else read_indicators(path)
        if is_main and path and cached is None:
            store(path, right, found)
        if indicators is not None and found is not None:
            indicators[(job.model, job.row, job.eps)] = found
        results[(job.model, job.row, job.eps)] = right
        if is_main and log_path:
            line = (f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {labels[job.model]}  {job.attack}  eps {job.eps:.4g}  "
                    f"accuracy {right.float().mean().item():.4f}  n {len(right)}  "
                    f"{'cached' if cached is not None else f'computed in {time.time() - start:.1f} s'}")
            append_line(log_path, line)
            if not sys.stderr.isatty():
                print(line, flush=True)
    return results


def run_attacks(model, dataset, index, attacks, eps_list, s, device, n_strong=None):
    """Per-sample correctness of one model, no cache: {("clean", 0.0): bool[n], (attack, eps):
    bool[n or n_strong]}: the cheap attacks on all of `index`, the costly ones on its first
    `n_strong` images (run_jobs, as the command line runs them)."""
    n_strong = len(index) if n_strong is None else n_strong
    results = run_jobs([model], dataset, plan_jobs(1, attacks, eps_list), index, len(index), n_strong, s, device)
    return {(row, eps): v for (_, row, eps), v in results.items()}


def load_all(paths, s):
    """The checkpoints (each checked before any work), their dataset's name and the eps grid."""
    loaded = [load_model(p, s) for p in paths]
    datasets = {m.dataset for m in loaded}
    if len(datasets) > 1:
        raise UserError("checkpoints of different datasets cannot share one table: " +
                        ", ".join(f"{p} ({m.dataset})" for p, m in zip(paths, loaded)))
    dataset_name = datasets.pop()
    eps_list = default_eps(dataset_name, s["NORM"]) if s["EPS"] == "auto" else parse_value("EPS", s["EPS"], [0.0])
    if s["NORM"] == "linf" and max(eps_list) > 1:
        raise UserError(f"--eps={s['EPS']}: an L-inf radius is at most 1 (pixels lie in [0, 1]); for L2 radii: --norm=l2")
    if s["NORM"] == "l2":  # the large-eps check at the family's L2 radius
        s["LARGE_EPS"] = LARGE_EPS_L2[family(dataset_name)]
    return loaded, dataset_name, eps_list


def memory_layout(s):
    """The models' and inputs' memory format: channels_last when CHANNELS_LAST holds."""
    return torch.channels_last if s["CHANNELS_LAST"] else torch.preserve_format


def place_models(paths, loaded, test_set, s, device):
    """The models on the device in their memory layout, each tried on a test batch (a model that
    fails there is a one-line error before any attack)."""
    layout = memory_layout(s)
    models = [m.model.to(device, memory_format=layout) for m in loaded]
    probe = test_set.batch(torch.arange(2), device)[0].contiguous(memory_format=layout)
    for path, model in zip(paths, models):
        try:
            with torch.no_grad():
                model.eval()(probe)
        except RuntimeError as err:
            raise UserError(f"{path}: the model fails on a test batch ({str(err).splitlines()[0]})"
                            + ("; try --channels_last=false" if s["CHANNELS_LAST"] else "")) from None
    return models


def summarise(results, labels, attacks, eps_list, n_strong, s, first_checks=None, indicators=None):
    """The table's rows (ordered), each model's checks (`first_checks`: {label: [(ok, sentence)]} of
    the model itself, then the sanity checks, then the indicators of attack failure of its jobs
    (`indicators`: run_jobs') and per-sample results."""
    rows, checks, per_sample = [], {}, {}
    for i, label in enumerate(labels):
        correct = {(a, e): v for (j, a, e), v in results.items() if j == i and a != "pgd-large-eps"}
        large = results[(i, "pgd-large-eps", s["LARGE_EPS"])]
        suite_worst = {name: worst_case(correct, eps_list, registry.suite(name, s["NORM"])) for name in registry.SUITES
                       if all(a in attacks for a in registry.suite(name, s["NORM"]))}  # each complete suite's own
        correct.update(worst_case(correct, eps_list))
        common = {k: v[:n_strong].float().mean().item() for k, v in correct.items()}
        suites = {name: {e: v.float().mean().item() for (_, e), v in w.items()} for name, w in suite_worst.items()}
        checks[label] = (first_checks or {}).get(label, []) + sanity_checks(
            common, n_strong, s["LARGE_EPS"], large.float().mean().item(), suites) + failure_indicators(
            {(a, e): got for (j, a, e), got in (indicators or {}).items() if j == i and a != "pgd-large-eps"},
            {k: len(v) for k, v in correct.items()})
        per_sample[label] = correct
        rows += [row_of(label, a, e, v) for (a, e), v in correct.items()]
        rows += [row_of(label, f"worst-{name}", e, v) for name, w in suite_worst.items() for (_, e), v in w.items()]
        rows.append(row_of(label, "pgd-large-eps", s["LARGE_EPS"], large))
    order = {a: i for i, a in enumerate(["clean"] + attacks + [f"worst-{name}" for name in registry.SUITES]
                                        + ["worst", "pgd-large-eps"])}
    rows.sort(key=lambda r: (order[r[1]], r[2]))
    return rows, checks, per_sample


def failure_indicators(found, n_of):
    """The indicators' warnings of one model's jobs, or one PASS line when none fired (no line when
    no job was watched: all came from a cache older than the indicators)."""
    fired = indicator_warnings(found, n_of)
    if fired or not found:
        return fired
    return [(True, f"no indicator of attack failure fired (silent success, still fooling new images at the end; "
                   f"{len(found)} jobs watched)")]


def evaluate_checkpoints(s, paths):
    """The table of the (checked) settings s over the checkpoints at `paths`: the jobs run (or read
    from the cache), then under torchrun rank 0 alone writes the CSV, .md, .png and .log."""
    base = os.path.splitext(s["OUT"])[0]
    cache_dir = s["CACHE"] or base + ".cache"
    if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        flag = f"--cache={s['CACHE']}" if s["CACHE"] else f"--out={s['OUT']}: {cache_dir} (its job cache)"
        raise UserError(f"{flag} exists and is not a folder")
    attacks = expand(s["ATTACKS"], s["NORM"])
    loaded, dataset_name, eps_list = load_all(paths, s)
    # your own class may call .view() on activations, which channels_last tensors refuse
    s["CHANNELS_LAST"] = s["CHANNELS_LAST"] == "true" or (s["CHANNELS_LAST"] == "auto" and not s["ARCH"])
    rank, world, device = start_processes(s["DEVICE"])  # under torchrun rank 0 alone writes
    test_set = get_dataset(dataset_name, train=False, root=s["DATA_DIR"] or loaded[0].data_dir)
    models = place_models(paths, loaded, test_set, s, device)
    attacks = add_surrogate(attacks, dataset_name, test_set, s, device)
    count = len(test_set) if s["N"] <= 0 else min(s["N"], len(test_set))
    index = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(s["SEED"]))
    n_strong = count if s["N_STRONG"] <= 0 else min(s["N_STRONG"], count)
    labels = unique_labels(paths)
    if rank == 0:
        make_dirs(cache_dir)
    found = {}
    results = run_jobs(models, test_set, plan_jobs(len(models), attacks, eps_list, s["LARGE_EPS"]), index,
                       count, n_strong, s, device, rank, world, [m.fingerprint for m in loaded], labels,
                       cache_dir, base + ".log", found)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return
    first = checks_of_models(models, labels, test_set, index[:min(n_strong, CHECK_IMAGES)], attacks, s, device)
    rows, checks, per_sample = summarise(results, labels, attacks, eps_list, n_strong, s, first, found)
    print(write_outputs(rows, labels, checks, s["OUT"], comparisons(per_sample, labels), s))
    print(f"written: {s['OUT']}, {base}.md, {base}.png, {base}.log (cache: {cache_dir}/)")


def add_surrogate(attacks, dataset_name, test_set, s, device):
    """With --surrogate: that checkpoint of this project loaded into the registry's SURROGATES (its
    fingerprint in s and in every transfer job's cache key) and the `transfer` row added."""
    if not s["SURROGATE"]:
        if "transfer" in attacks:
            raise UserError("the transfer attack needs --surrogate=CHECKPOINT (the network it crafts on)")
        return attacks
    plain = dict(s, MODEL="", ARCH="", ARCH_ARGS="", DATASET="")
    if not is_project_checkpoint(read_weights_file(s["SURROGATE"])):
        raise UserError(f"--surrogate={s['SURROGATE']} is not a checkpoint of this project (vgg_training.py's)")
    surrogate = load_model(s["SURROGATE"], plain)
    if surrogate.dataset != dataset_name:
        raise UserError(f"--surrogate={s['SURROGATE']} is a model of {surrogate.dataset}, the table's models "
                        f"are of {dataset_name}")
    s["SURROGATE_ID"] = surrogate.fingerprint
    registry.SURROGATES[surrogate.fingerprint] = place_models([s["SURROGATE"]], [surrogate], test_set, s, device)[0].eval()
    return attacks + ([] if "transfer" in attacks else ["transfer"])


CHECK_IMAGES = 200  # images of the fixed subset the model checks run on


def checks_of_models(models, labels, test_set, index, attacks, s, device):
    """AutoAttack's checks of each model (model_checks.py) on the first test images of the subset."""
    layout = memory_layout(s)
    x, y = test_set.batch(index, device)
    x = x.contiguous(memory_format=layout)
    return {label: model_checks(model, x, y, test_set.num_classes, attacks) for label, model in zip(labels, models)}


def unique_labels(paths):
    """Each checkpoint's label in the table (numbered where two would read the same)."""
    labels = [label_of(p) for p in paths]
    return labels if len(set(labels)) == len(labels) else [f"{i + 1}:{lab}" for i, lab in enumerate(labels)]
