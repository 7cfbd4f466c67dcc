"""RESULTS.md's sections and each study's tables, written from the files its runs left under
results/ alone (studies.py's write-ups call them; `STAGE=report python -m robustlib.study NAME`
rewrites them). Each section sits between <!-- NAME --> and <!-- /NAME --> markers (SECTIONS gives
their order), so one section is rewritten without touching the others.
"""
import json
import os
import re

from .checkpoints import atomic_write, make_dirs
from .errors import UserError
from .studies import BASELINES, BASES, LAMBDA_RUNS, LAMBDAS, ON_TOP, PAPER_ATTACK, STUDY_EPS, seeded

# the published anchors the reproduction's summary table shows beside its runs: (model, clean %,
# AutoAttack or strongest-attack %, eps, source)
PUBLISHED = {
    "fashion-mnist": [("plain CE", 90.50, "<= 4.0", 0.1, "Croce, Andriushchenko & Hein 2019, 1,000 points"),
                      ("PGD-AT", 88.46, "<= 78.5", 0.1, "Croce, Andriushchenko & Hein 2019, 1,000 points")],
    "mnist": [("TRADES (SmallCNN)", 99.48, "92.81", 0.3, "Croce & Hein 2020, AutoAttack"),
              ("PGD-AT (Madry's CNN)", 98.53, "88.50", 0.3, "Croce & Hein 2020, AutoAttack"),
              ("FGSM-RS (Wong's net)", 98.50, "82.93", 0.3, "Croce & Hein 2020, AutoAttack")],
    "digits": [],
}
TITLES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "digits": "digits"}
SECTIONS = ("reproduce-fashion-mnist", "reproduce-mnist", "reproduce-digits", "ce-vs-pclc-fashion-mnist",
            "ce-vs-pclc-mnist", "ce-vs-pclc-digits", "ce-vs-pclc-l2-fashion-mnist", "ce-vs-pclc-l2-mnist",
            "ce-vs-pclc-l2-digits", "study", "mnist-ssc-protocol",
            "mnist-baselines")
_SECTION = re.compile(r"<!-- ([\w-]+) -->\n(.*?)<!-- /\1 -->\n", flags=re.S)


def read_text(path):
    if not os.path.exists(path):
        raise UserError(f"{path} is missing: run the step that writes it first")
    with open(path) as f:
        return f.read()


def write_section(path, name, text):
    """RESULTS.md at `path` with section `name` set to `text`; its other marked sections kept, all
    in the order of SECTIONS (text outside the markers is not kept)."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name}")
    old = read_text(path) if os.path.exists(path) else ""
    sections = {m.group(1): m.group(2) for m in _SECTION.finditer(old) if m.group(1) in SECTIONS}
    sections[name] = text.rstrip("\n") + "\n"
    parts = [f"<!-- {key} -->\n{sections[key]}<!-- /{key} -->\n" for key in SECTIONS if key in sections]
    atomic_write(path, lambda f: f.write("\n".join(["# Results\n", *parts]).encode()))


def published_rows(dataset, eps_grid, before=""):
    """The published anchors of `dataset` as table rows: clean, and the robust figure in its eps
    column (marked published), `before` the cells between the model and its clean accuracy."""
    return [f"| {model}: published, {source} | {before}{clean:.2f} | "
            + " | ".join(f"{robust} (published)" if abs(e - eps) < 1e-9 else "-" for e in eps_grid) + " |"
            for model, clean, robust, eps, source in PUBLISHED[dataset]]


def summary_table(res, dataset, runs):
    """Clean accuracy and the worst case of the default suite at each eps, one row per run (95 %
    Wilson intervals), then the published anchors of `dataset` in the same columns, marked."""
    import pandas as pd
    t = pd.read_csv(os.path.join(res, "robustness.csv"))
    eps_grid = sorted(t[t.attack == "worst"].eps.unique())
    cell = lambda r: f"{100 * r.accuracy:.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"  # noqa: E731
    lines = ["| model | clean (%) | " + " | ".join(f"worst eps {e:g} (%)" for e in eps_grid) + " |",
             "|---|---|" + "---|" * len(eps_grid)]
    for name in runs:
        part = t[t.checkpoint == f"{name}/final"]
        if part.empty:
            raise UserError(f"{res}/robustness.csv holds no rows of {name}/final: attack it first")
        worst = {round(r.eps, 9): cell(r) for r in part[part.attack == "worst"].itertuples()}
        clean = part[part.attack == "clean"].iloc[0]
        lines.append(f"| {name} | {cell(clean)} | " + " | ".join(worst.get(round(e, 9), "-") for e in eps_grid) + " |")
    return "\n".join(lines + published_rows(dataset, eps_grid))


def reproduce_section(dataset, runs, res, out, trained_s, total_s):
    """One dataset's part of RESULTS.md (training: last epoch of each of `runs`, from RES/training/;
    the summary with the published anchors; the robustness table; the figures), and the summary
    table alone."""
    records = training_records(res)
    missing = [name for name in runs if name not in records]
    if missing:
        raise UserError(f"{res}/training holds no record of {missing[0]}: run the study (STAGE=all) first")
    logs = {name: records[name] for name in runs}
    summary = summary_table(res, dataset, runs)
    rows = [f"| {name} | {len(log)} | {100 * log.iloc[-1].test_acc:.2f}% | {log.iloc[-1].prob_gap:.4f} | "
            f"{log.seconds.sum():.0f} s |" for name, log in logs.items()]
    training_min = sum(log.seconds.sum() for log in logs.values()) / 60
    prefix = f"Figures/{dataset}-lenet5"
    figures = read_text(os.path.join(out, f"{prefix}-figures.md"))
    return "\n".join([
        f"## LeNet-5 on {TITLES[dataset]} (`bash studies/reproduce.sh`)", "",
        f"Made by `bash studies/reproduce.sh` on a 2-core CPU. Its last invocation for {TITLES[dataset]} took "
        f"{total_s / 60:.1f} min, of which {trained_s / 60:.1f} min training (runs that had final.pt were not "
        f"trained again, and finished attacks came from the job cache); training all {len(logs)} runs takes "
        f"{training_min:.1f} min (the sum of their epoch times in log.csv).", "",
        "### Training (last epoch, whole test set)", "",
        "| run | epochs | test accuracy | mean probability gap | training time |", "|---|---|---|---|---|", *rows, "",
        "### Worst case over the default suite, beside the published anchors", "",
        "Our rows: `worst` of `adv_testing.py` (a sample counts only if it survives every attack at that eps; "
        "clean on the whole test set). Published rows are other papers' models and budgets, for scale.", "",
        summary, "",
        "### Robustness (`adv_testing.py`)", "", read_text(os.path.join(res, "robustness.md")), "",
        f"![robustness]({prefix}-robustness.png)", "",
        figures.replace("# Figures", "### Figures"), "",
        f"![motivation]({prefix}-motivation.png)", "",
        f"![effect]({prefix}-effect.png)", "",
        f"![t-SNE]({prefix}-tsne.png)", ""]), summary


def study_table(csv):
    """The study's attack table with `run` (lambda-N, rcc), `lambda` and `seed` columns (the
    definition's LAMBDA_RUNS)."""
    import pandas as pd
    t = pd.read_csv(csv)
    runs = [c[:-len("/final")] for c in t.checkpoint]
    unknown = sorted(set(runs) - set(LAMBDA_RUNS))
    if unknown:
        raise UserError(f"{csv}: {unknown[0]} is not a run of the lambda study's definition (robustlib/studies.py)")
    for i, column in enumerate(("run", "lambda", "seed")):
        t[column] = [LAMBDA_RUNS[r][i] for r in runs]
    t["lambda"] = t["lambda"].astype(float)  # rcc: none
    return t


def best_lambda(csv):
    """The lambda > 0 with the highest worst case at the training eps (0.03), seed 0."""
    t = study_table(csv)
    w = t[(t.attack == "worst") & (t.eps == STUDY_EPS[0]) & (t.seed == 0) & (t["lambda"].fillna(0) > 0)]
    if w.empty:
        raise UserError(f"{csv} holds no worst case at eps {STUDY_EPS[0]} of a run with lambda > 0")
    return str(int(w.loc[w.accuracy.idxmax(), "lambda"]))


def study_rows(t, clean_full):
    """Table rows and figure points per run: seed 0's interval, or mean +- sd over seeds."""
    rows, points = [], {eps: [] for eps in STUDY_EPS}
    for run_name in [f"lambda-{lam}" for lam in LAMBDAS] + ["rcc"]:
        part = t[t.run == run_name]
        if part.empty:
            continue
        seeds = sorted(part.seed.unique())
        cells = []
        for eps in STUDY_EPS:
            worst = part[(part.attack == "worst") & (part.eps == eps)]
            values = 100 * worst.accuracy
            mean, sd = values.mean(), (values.std(ddof=1) if len(values) > 1 else 0.0)
            one = worst.iloc[0]
            spread = f" [{100 * one.ci_low:.1f}, {100 * one.ci_high:.1f}]" if len(seeds) == 1 else f" ± {sd:.1f} (sd)"
            cells.append(f"{mean:.1f}{spread}")
            points[eps].append((run_name, mean, sd))
        clean = [100 * clean_full[f"{run_name}-seed-{seed}"] for seed in seeds]
        label = (run_name.replace("lambda-", "SSC lambda ") if run_name.startswith("lambda")
                 else "RCC lambda 15 (features)")
        if run_name == "lambda-0":
            label = "lambda 0 (plain FGSM adversarial training)"
        rows.append(f"| {label} | {len(seeds)} | {sum(clean) / len(clean):.2f} | {cells[0]} | {cells[1]} |")
    return rows, points


def save_figure(fig, path):
    """The figure as a PNG at `path` (its folder made), written to a temporary name first."""
    import matplotlib.pyplot as plt
    make_dirs(os.path.dirname(os.path.abspath(path)))
    atomic_write(path, lambda f: fig.savefig(f, dpi=130, format="png"))
    plt.close(fig)


def plot_study(points, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), sharey=True)
    for ax, eps in zip(axes, STUDY_EPS):
        data = points[eps]
        xs = range(len(data))
        ax.errorbar(xs, [m for _, m, _ in data], yerr=[sd for _, _, sd in data], fmt="o", capsize=4)
        ax.set_xticks(list(xs), [r.replace("lambda-", "") if r.startswith("lambda") else "RCC" for r, _, _ in data])
        ax.set_title(f"worst case over the default suite, eps {eps}")
        ax.set_xlabel("lambda (SSC), or RCC")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("robust accuracy (%)")
    fig.tight_layout()
    save_figure(fig, path)


def study_section(res, best, total_s, figure, link):
    """The lambda study's section (table, the figure drawn at `figure` and shown from `link`, the full
    attack table) and its table lines."""
    t = study_table(os.path.join(res, "robustness.csv"))
    clean_full = {name: log.test_acc.iloc[-1] for name, log in training_records(res).items()}
    rows, points = study_rows(t, clean_full)
    plot_study(points, figure)
    table = ["| run | seeds | clean accuracy (%, 10,000 images) | worst eps 0.03 (%) | worst eps 0.06 (%) |",
             "|---|---|---|---|---|", *rows]
    text = ["## The lambda study (`bash studies/study.sh`)", "",
            f"Made by `bash studies/study.sh` ({total_s / 60:.1f} min on a 2-core CPU; 0 when everything was already "
            f"trained and attacked). Best lambda > 0 by the worst case at eps 0.03 (seed 0): {best}. Worst: a "
            "sample counts only if it survives every attack at --budget=standard (the released FGSM, MIM, "
            "PGD-10, SPSA; AutoAttack's APGD-CE, APGD-T, FAB-T, Square-5000; the adaptive APGD-PM, APGD-DLR, "
            "feature pull) on the same 200 test images; one seed: 95 % "
            "Wilson interval; three seeds: mean ± standard deviation over seeds.", "", *table, "",
            f"![lambda study]({link})", "",
            "The attack table behind it (every attack, every run):", "",
            read_text(os.path.join(res, "robustness.md"))]
    return "\n".join(text), table


POINT_COLUMNS = ["attack", "eps", "lambda", "seed", "clean_accuracy", "paper_accuracy", "paper_n",
                 "worst_accuracy", "worst_ci_low", "worst_ci_high", "n", "warnings", "command"]


def warnings_of(md_text, label):
    """The sanity-check warnings adv_testing.py's table gives `label` (its lines '- label: ...' that
    hold WARNING, wherever the word stands in the sentence)."""
    return [line.split(": ", 1)[1] for line in md_text.splitlines()
            if line.startswith(f"- {label}: ") and "WARNING" in line]


def ssc_points(res, points):
    """One row per (attack, eps, lambda, seed) (`points`: each checkpoint label's, as the study's
    definition names them) from study_mnist.sh's tables (RES/A-epsE.csv): clean
    accuracy (whole test set), the paper's number (A at e as released), the worst case over the
    default suite and the paper's attack with its 95 % interval, n, the masking warnings, and the
    command that trained the point."""
    import pandas as pd
    rows = []
    for name in sorted(f for f in os.listdir(res) if re.fullmatch(r"(fgsm|pgd|mim)-eps[\d.]+\.csv", f)):
        table = pd.read_csv(os.path.join(res, name))
        md = read_text(os.path.join(res, name[:-4] + ".md"))
        for label, part in table.groupby("checkpoint", sort=False):
            if label not in points:
                raise UserError(f"{res}/{name}: {label} is not a point of the sweep's definition (robustlib/studies.py)")
            attack, eps, lam, seed = points[label]
            pick = lambda a: part[(part.attack == a) & ((part.eps - eps).abs() < 1e-9)].iloc[0]  # noqa: E731
            clean, paper, worst = part[part.attack == "clean"].iloc[0], pick(PAPER_ATTACK[attack]), pick("worst")
            command = read_text(os.path.join(res, "training", label.split("/")[0] + ".command.txt")).strip()
            rows.append([attack, eps, lam, seed, clean.accuracy, paper.accuracy, int(paper.n), worst.accuracy,
                         worst.ci_low, worst.ci_high, int(worst.n), " | ".join(warnings_of(md, label)), command])
    if not rows:
        raise UserError(f"{res} holds no table of study_mnist.sh (A-epsE.csv): run the sweep first")
    frame = pd.DataFrame(rows, columns=POINT_COLUMNS)
    return frame.sort_values(["attack", "eps", "lambda", "seed"], key=lambda c: c.map(
        {"fgsm": 0, "pgd": 1, "mim": 2}) if c.name == "attack" else c).reset_index(drop=True)


def sweep_timing(res, logs=r"(fgsm|pgd|mim)-eps[\d.]+\.log"):
    """What a study's work took, from its own records (the same on every rerun): training, the sum
    of the runs' epoch times (RES/training/); attacking, the sum of the jobs' times in its tables'
    logs (RES/NAME.log, the names matching `logs`), each job (checkpoint, attack, eps) counted at its
    last computation: a log keeps the lines of earlier runs of the same names, which a rerun replaces."""
    train_s = sum(log.seconds.sum() for log in training_records(res).values())
    jobs = {}
    for name in sorted(f for f in os.listdir(res) if re.fullmatch(logs, f)):
        for job, took in re.findall(r"^\S+ \S+  (\S+  \S+  eps \S+)  .*computed in ([\d.]+) s$",
                                    read_text(os.path.join(res, name)), re.MULTILINE):
            jobs[(name, job)] = float(took)
    return dict(train_s=round(float(train_s), 1), attack_s=round(sum(jobs.values()), 1))


def plot_points(points, path):
    """The paper's layout: three panels (FGSM, PGD, MIM), accuracy against eps, one colour per
    lambda; the paper's number solid, the worst case of the same models dashed, seed 0, intervals
    (worst case) as bands."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    lambdas = sorted(points["lambda"].unique())
    colours = dict(zip(lambdas, plt.cm.viridis([i / max(len(lambdas) - 1, 1) for i in range(len(lambdas))])))
    for ax, attack in zip(axes, ("fgsm", "pgd", "mim")):
        part = points[(points.attack == attack) & (points.seed == 0)]
        for lam, curve in part.groupby("lambda"):
            curve = curve.sort_values("eps")
            c = colours[lam]
            ax.plot(curve.eps, 100 * curve.paper_accuracy, "-o", ms=3, color=c, label=f"lambda {lam}")
            ax.plot(curve.eps, 100 * curve.worst_accuracy, "--", color=c)
            ax.fill_between(curve.eps, 100 * curve.worst_ci_low, 100 * curve.worst_ci_high, color=c, alpha=0.12)
        ax.set_title(f"{attack.upper()} (solid: the paper's {PAPER_ATTACK[attack]}; dashed: worst case)", fontsize=9)
        ax.set_xlabel("eps (training and test)")
        ax.grid(alpha=0.3)
        if not part.empty:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("test accuracy (%)")
    fig.tight_layout()
    save_figure(fig, path)


def points_table(points):
    """Markdown: per point the clean, paper's and worst-case accuracy (seeds: mean ± sd over seeds)."""
    lines = ["| attack | eps | lambda | seeds | clean (%) | paper's attack (%) | worst case (%) | warnings |",
             "|---|---|---|---|---|---|---|---|"]
    for (attack, eps, lam), part in points.groupby(["attack", "eps", "lambda"], sort=False):
        def cell(column, interval=False):
            values = 100 * part[column]
            if len(part) > 1:
                return f"{values.mean():.1f} ± {values.std(ddof=1):.1f} (sd)"
            one = part.iloc[0]
            return f"{values.iloc[0]:.1f}" + (f" [{100 * one.worst_ci_low:.1f}, {100 * one.worst_ci_high:.1f}]"
                                              if interval else "")
        warned = sum(bool(w) for w in part.warnings.fillna(""))
        lines.append(f"| {attack} | {eps:g} | {lam} | {len(part)} | {cell('clean_accuracy')} | "
                     f"{cell('paper_accuracy')} | {cell('worst_accuracy', True)} | {warned} of {len(part)} |")
    return "\n".join(lines)


PAIR = re.compile(r"^\| (\S+) - (\S+) \| ([\d.]+) \| ([+-][\d.]+) \| ([\d.e+-]+) \| ")


def runs_table(res, labels):
    """Every row of the adv_testing.py tables RES/*.csv with `method` and `seed` columns (`labels`: each
    checkpoint label's, as the study's definition names them; a checkpoint in two tables counts once:
    the images are the same), and their Markdown's lines."""
    import pandas as pd
    names = sorted(f for f in os.listdir(res) if f.endswith(".csv"))
    if not names:
        return None, []
    t = pd.concat([pd.read_csv(os.path.join(res, f)) for f in names]).drop_duplicates(
        ["checkpoint", "attack", "eps"])
    unknown = sorted(set(t.checkpoint) - set(labels))
    if unknown:
        raise UserError(f"{res}: {unknown[0]} is not a run of the study's definition (robustlib/studies.py)")
    t["method"], t["seed"] = [labels[c][0] for c in t.checkpoint], [int(labels[c][1]) for c in t.checkpoint]
    lines = [line for f in names for line in read_text(os.path.join(res, f[:-4] + ".md")).splitlines()]
    return t, lines


def mean_sd(values, interval=None):
    """'m ± sd' (sample standard deviation) for several values, 'm [lo, hi]' (the interval given) for one."""
    values = list(values)
    if len(values) > 1:
        m = sum(values) / len(values)
        sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return f"{m:.1f} ± {sd:.1f}"
    return f"{values[0]:.1f}" + (f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else "")


def suites_table(tables, models):
    """Markdown: per model and eps, the worst case of each suite alone and of all of them (mean ±
    sd over the adv_testing tables `tables`, one per seed): what each suite moves. `models`:
    {checkpoint label: its name in the table}."""
    import pandas as pd
    t = pd.concat([pd.read_csv(path) for path in tables])
    suites = [("worst-released", "released attacks"), ("worst-autoattack", "AutoAttack"),
              ("worst-adaptive", "adaptive suite"), ("worst", "all (worst case)")]
    lines = ["| model | eps | " + " | ".join(f"{name} (%)" for _, name in suites) + " |", "|---|---|" + "---|" * len(suites)]
    for label, name in models.items():
        for eps in sorted(t[(t.checkpoint == label) & (t.attack == "worst")].eps.unique()):
            def cell(attack):
                rows = t[(t.checkpoint == label) & (t.attack == attack) & ((t.eps - eps).abs() < 1e-9)]
                return mean_sd(100 * rows.accuracy) if len(rows) else "-"
            lines.append(f"| {name} | {eps:g} | " + " | ".join(cell(a) for a, _ in suites) + " |")
    return "\n".join(lines)


def baselines_table(t, eps_grid):
    """Clean and worst case per baseline (seeds: mean ± sd), the published anchors beside them."""
    lines = ["| model | seeds | n (worst) | clean (%) | " + " | ".join(f"worst eps {e:g} (%)" for e in eps_grid) + " |",
             "|---|---|---|---|" + "---|" * len(eps_grid)]
    for method in BASELINES:
        part = t[t.method == method]
        if part.empty:
            continue
        def cell(attack, eps=None):
            rows = part[(part.attack == attack) & ((part.eps - eps).abs() < 1e-9 if eps is not None else True)]
            if rows.empty:  # not attacked at that eps
                return "-"
            one = rows.iloc[0]
            return mean_sd(100 * rows.accuracy, (100 * one.ci_low, 100 * one.ci_high))
        lines.append(f"| {method} | {part.seed.nunique()} | {sizes(part[part.attack == 'worst'])} | {cell('clean')} | "
                     + " | ".join(cell("worst", e) for e in eps_grid) + " |")
    return "\n".join(lines + published_rows("mnist", eps_grid, before="- | - | "))


def suites_run(t):
    """The suites whose worst-case rows `t` holds, as words: 'released, AutoAttack, adaptive'."""
    return ", ".join(name for attack, name in (("worst-released", "released"), ("worst-autoattack", "AutoAttack"),
                                               ("worst-adaptive", "adaptive")) if (t.attack == attack).any())


def sizes(rows):
    """The images behind `rows` (worst-case rows of one or more tables): '200', or '200, 1000' where they differ."""
    return ", ".join(str(int(n)) for n in sorted(rows.n.unique())) or "-"


def on_top_table(t, lines, eps_grid, base="fgsm-rs"):
    """Per method on top of `base` and eps: its clean accuracy beside the baseline's (a worst case
    above the baseline's means nothing from a model at chance), its worst case, its difference to the
    baseline of the same seed (mean ± sd over seeds) and each seed's exact McNemar p on the same images."""
    pairs = {}
    for line in lines:
        match = PAIR.match(line)
        if match:
            a, b, eps, diff, p = match.groups()
            pairs[(a, b, round(float(eps), 9))] = (float(diff), float(p))
    out = ["| method | eps | seeds | n | clean (%): method / " + base + " | worst (%) | difference to " + base
           + " (points) | p per seed | beyond noise |", "|---|---|---|---|---|---|---|---|---|"]

    def clean(method, seeds):
        rows = t[(t.method == method) & (t.attack == "clean") & t.seed.isin(seeds)]
        return mean_sd(100 * rows.accuracy) if len(rows) else "-"
    for method, (_, label) in ON_TOP.items():
        part = t[(t.method == method) & (t.attack == "worst")]
        for eps in eps_grid:
            rows = part[(part.eps - eps).abs() < 1e-9].sort_values("seed")
            if rows.empty:
                continue
            diffs, ps = [], []
            for seed in rows.seed:
                a, b = f"{seeded(base, seed)}/final", f"{seeded(method, seed)}/final"
                if (a, b, round(eps, 9)) not in pairs:
                    raise UserError(f"no comparison of {b} with {a} at eps {eps:g}: attack them together")
                diff, p = pairs[(a, b, round(eps, 9))]
                diffs.append(-diff)  # the table holds a - b: the baseline minus the method
                ps.append(p)
            one = rows.iloc[0]
            out.append(f"| {label} | {eps:g} | {len(rows)} | {sizes(rows)} | {clean(method, rows.seed)} / {clean(base, rows.seed)} | {mean_sd(100 * rows.accuracy, (100 * one.ci_low, 100 * one.ci_high))} | "
                       f"{mean_sd(diffs)} | {', '.join(f'{p:.3g}' for p in ps)} | {sum(p < 0.05 for p in ps)} of {len(ps)} |")
    return "\n".join(out)


def budget_check(t, res):
    """Lines comparing the worst case of the default (quick) AutoAttack budget with the tables'
    standard one, per baseline at the eps of RES/quick-budget/baselines.csv; none if it is absent."""
    import pandas as pd
    path = os.path.join(res, "quick-budget", "baselines.csv")
    if not os.path.exists(path):
        return []
    quick = pd.read_csv(path)
    quick = quick[quick.attack == "worst"]
    out = ["| model | eps | n | worst, standard budget (%) | worst, quick budget (%) | quick - standard (points) |",
           "|---|---|---|---|---|---|"]
    gaps = []
    for row in quick.itertuples():
        std = t[(t.checkpoint == row.checkpoint) & (t.attack == "worst") & ((t.eps - row.eps).abs() < 1e-9)]
        if std.empty:
            raise UserError(f"{path}: {row.checkpoint} at eps {row.eps:g} has no standard-budget row in {res}")
        a, b = std.iloc[0], row
        gaps.append(100 * (b.accuracy - a.accuracy))
        cells = [mean_sd([100 * r.accuracy], (100 * r.ci_low, 100 * r.ci_high)) for r in (a, b)]
        out.append(f"| {row.checkpoint.split('/')[0]} | {row.eps:g} | {row.n} | {cells[0]} | {cells[1]} | {gaps[-1]:+.1f} |")
    worst = max(gaps)
    verdict = (f"The quick budget leaves up to {worst:+.1f} points more than the standard one: more than 1 point, "
               "so only the standard budget's tables are of record." if worst > 1 else
               f"The quick budget is within 1 point of the standard one on every baseline (largest {worst:+.1f}).")
    return ["### Budget check: the default quick AutoAttack (10 iterations) against the standard (100)", "",
            *out, "", verdict, ""]


def training_records(res):
    """The training records baselines.sh keeps beside the tables (RES/training/FLAT.log.csv, FLAT: the
    run's name with '/' as '_'): {run name: its log}, so that the report needs no checkpoints."""
    import pandas as pd
    folder = os.path.join(res, "training")
    names = sorted(f[:-len(".log.csv")] for f in os.listdir(folder) if f.endswith(".log.csv")) \
        if os.path.isdir(folder) else []
    return {name.replace("_", "/", 1): pd.read_csv(os.path.join(folder, f"{name}.log.csv")) for name in names}


def baselines_section(res, total_s, labels):
    """results/mnist-baselines/summary.md: the baselines beside the published anchors (their seeds from
    every table), the methods on top of each BASE (RES/on-BASE/), and each run's training time (from
    RES/training/): all of it from RES alone."""
    import pandas as pd
    t, _ = runs_table(res, labels)
    tops = {b: runs_table(os.path.join(res, f"on-{b}"), labels) for b in BASES if os.path.isdir(os.path.join(res, f"on-{b}"))}
    tops = {b: top for b, top in tops.items() if top[0] is not None}
    # a checkpoint in several tables counts once, and whole: a base rerun in an on-top table (FGSM-RS
    # with the released step) replaces every row of the older run of that name in RES's own table
    # (CLAMPED-START.md), at the eps the rerun lacks too (the budget check keeps RES's table: its
    # quick-budget rows were made on those older runs)
    newer = [top[0] for top in tops.values()]
    older = t[~t.checkpoint.isin(pd.concat(newer).checkpoint)] if t is not None and newer else t
    found = newer + ([older] if older is not None else [])
    if not found:
        raise UserError(f"{res} holds no *.csv: run baselines.sh first")
    every = pd.concat(found).drop_duplicates(["checkpoint", "attack", "eps"])
    eps_grid = sorted(every[every.attack == "worst"].eps.unique())
    times = [f"| {name} | {len(log)} | {100 * log.test_acc.iloc[-1]:.2f} | {log.seconds.sum() / 60:.1f} |"
             for name, log in training_records(res).items()]
    on_top = [line for b, (tb, lines) in tops.items()
              for line in (f"### On top of {b} (same recipe and budget, seed by seed; attacks: {suites_run(tb)})", "",
                           on_top_table(tb, lines, eps_grid, base=b), "")]
    caveat = os.path.join(res, "CLAMPED-START.md")  # a note on runs made by an earlier step, if any
    caveat = ([f"**Read first ({os.path.basename(caveat)}):** "
               + read_text(caveat).splitlines()[0].lstrip("# ") + ".", ""] if os.path.exists(caveat) else [])
    return "\n".join([
        "## The field's baselines on MNIST, and the papers' methods on top (`bash studies/baselines.sh`)", "", *caveat,
        "Made by `bash studies/baselines.sh`, one `PART` / `SEEDS` sitting at a time (the sitting that wrote this: "
        f"{total_s / 60:.1f} min on a 2-core CPU; 0 when everything was done). "
        "Worst case: a sample counts only if it survives every attack its table ran at "
        "`--budget=standard` (the released attacks and AutoAttack: Croce & Hein's 100 APGD / FAB "
        "iterations, Square 5000; the adaptive suite where a heading names it) on the same test "
        "images (`n`); one seed: 95 % Wilson interval; more: mean ± sd over seeds.", "",
        "### Baselines, beside the published anchors", "", baselines_table(every, eps_grid), "",
        *on_top, *(budget_check(t, res) if t is not None else []),
        "### Training", "", "| run | epochs | clean test accuracy (%) | training time (min) |",
        "|---|---|---|---|", *times, ""])


def ssc_points_write_up(res, labels, figure, results, record, grid):
    """points.csv, points.md, timing.json, the figure and the section of the MNIST-figure study
    (`labels`: each checkpoint label's (attack, eps, lambda, seed); `record`: the invocation's
    total_s, cores and date, so that STAGE=report writes the same files)."""
    seconds = record["total_s"]
    points = ssc_points(res, labels)
    atomic_write(os.path.join(res, "points.csv"), lambda f: f.write(points.to_csv(index=False).encode()))
    plot_points(points, figure)
    table = points_table(points)
    text = (f"Made by `bash studies/study_mnist.sh` ({seconds / 60:.1f} min; 0 when everything was done). "
            f"Worst case: the released attacks, AutoAttack and the adaptive suite at --budget=standard and the "
            f"paper's attack, on the same images; one seed: 95 % Wilson interval; more: mean ± sd over "
            f"seeds.\n\n{table}\n")
    atomic_write(os.path.join(res, "points.md"), lambda f: f.write(text.encode()))
    timing = dict(sweep_timing(res), last_invocation_s=seconds, points=len(points),
                  cores=record["cores"], grid=grid, date=record["date"])  # bench.py reports it
    atomic_write(os.path.join(res, "timing.json"), lambda f: f.write(json.dumps(timing, indent=1).encode()))
    write_section(results, "mnist-ssc-protocol", "\n".join([
        "## The title paper's MNIST figure in its own protocol (`bash studies/study_mnist.sh`)", "", text,
        f"![the title paper's MNIST figure](Figures/{os.path.basename(figure)})", ""]))
    print(table)
