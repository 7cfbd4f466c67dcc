"""Every study of this repository, each one definition: its settings, its runs and tables (the
plan), and its write-up (the tables, figures and RESULTS.md section it writes, from results/ alone).
`python -m robustlib.study NAME` runs one (study.py: the runner); `bash studies/NAME.sh` is the same.
A new study is one entry of STUDIES.
"""
import os
import re
import subprocess
import sys
import time

from .checkpoints import atomic_write
from .errors import RunError
from .study import ANY, REPO, SETTLE, Setting, Step, Study, choice, words


def natural(names):
    """Names in the order `sort -V` gives (numbers by value)."""
    return sorted(names, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def write(path, text):
    atomic_write(path, lambda f: f.write(text.encode()))


# ---- reproduce: PC-LC's comparison on the offline datasets (docs/reproduction.md) ----------------------
# per dataset: CE (16 epochs), CE -> PC + 0.05 LC (8 + 8), PGD adversarial training (CE(X) + CE(X_adv),
# two phases of 4) and on Fashion-MNIST also with the structural constraint lambda 100; every checkpoint
# attacked with adv_testing.py's default suite at --budget=standard; the figures; the section
REPRO_ADV = {"fashion-mnist": "--adv_eps=0.1 --adv_steps=3", "mnist": "--adv_eps=0.3 --adv_steps=10",
             "digits": "--adv_eps=0.3 --adv_steps=10"}  # digits: the tests' stand-in for MNIST


def reproduce_runs(dataset):
    """{run name: its settings} of `dataset`'s reproduction."""
    runs = {"ce": "--loss=ce --warmup_epochs=8 --epochs=8", "pclc": "--loss=pclc --warmup_epochs=8 --epochs=8",
            "adv": f"--loss=ce --warmup_epochs=4 --epochs=4 --adv_train=pgd {REPRO_ADV[dataset]} --struct_lambda=0"}
    if dataset == "fashion-mnist":
        runs["adv-struct"] = runs["adv"].replace("--struct_lambda=0", "--struct_lambda=100")
    return runs


def reproduce_figures(ctx, dataset):
    import shutil
    fig = ctx.path("Figures")
    os.makedirs(fig, exist_ok=True)
    shutil.copyfile(os.path.join(ctx.res, "robustness.png"), os.path.join(fig, f"{dataset}-lenet5-robustness.png"))
    done = subprocess.run([sys.executable, os.path.join(REPO, "studies", "make_figures.py"),
                           f"--ce={ctx.runs}/ce/final.pt", f"--pc={ctx.runs}/pclc/final.pt", f"--out_dir={fig}",
                           *ctx.s["FIGURE_EXTRA"].split()], cwd=REPO)
    if done.returncode != 0:
        raise RunError(f"make_figures.py failed on {dataset} (its output: above)")


def reproduce_write_up(ctx, dataset, seconds):
    from . import report
    text, summary = report.reproduce_section(dataset, list(reproduce_runs(dataset)), ctx.res, ctx.out,
                                             **ctx.invocation(**seconds))
    report.write_section(ctx.path("RESULTS.md"), f"reproduce-{dataset}", text)
    print(summary)


def reproduce_plan(ctx):
    for dataset in ctx.s["DATASETS"].split():
        ctx.runs, ctx.res = ctx.path("runs", "repro", dataset), ctx.path("results", f"{dataset}-lenet5")
        start, runs = ctx.elapsed(), reproduce_runs(dataset)
        for name, args in runs.items():
            yield ctx.run(name, f"--dataset={dataset}", args)
        yield SETTLE
        trained = ctx.elapsed() - start
        yield ctx.table("robustness", runs, "--budget=standard")
        yield Step(lambda d=dataset: reproduce_figures(ctx, d))
        yield Step(lambda d=dataset, t=trained, s=start: reproduce_write_up(
            ctx, d, dict(trained_s=t, total_s=ctx.elapsed() - s)), write_up=True)


# ---- ce-vs-pclc: CE against PC + LC over seeds on 1,000 images, the adaptive suite included ---------------
# per dataset and seed: reproduce's ce and pclc runs (--seed=N), attacked together with the default
# suite, the adaptive suite and the noise floor at --budget=standard on N images (every attack on all);
# the write-up: per eps the difference PC + LC - CE per seed, mean ± sd and the paired t over seeds
CE_PCLC_EPS = {"fashion-mnist": "0.02,0.05,0.1", "mnist": "0.05,0.1,0.15", "digits": "0.1,0.3"}
CE_PCLC_ATTACKS = "--attacks=released,autoattack,adaptive,noise --budget=standard"
CE_PCLC_L2_EPS = {"fashion-mnist": "0.5,1.5", "mnist": "1.0,2.0", "digits": "1.0,2.0"}  # up to the usual L2 radii
CE_PCLC_NORMS = {  # threat model: its study (results/STUDY/), eps grid, title and script
    "linf": ("ce-vs-pclc", CE_PCLC_EPS, "over seeds", "ce_vs_pclc.sh"),
    "l2": ("ce-vs-pclc-l2", CE_PCLC_L2_EPS, "in the L2 threat model", "ce_vs_pclc_l2.sh")}


def ce_pclc_findings(dataset, seeds=(0, 1, 2), rel=None, norm="linf"):
    """The study's rows of a findings table (robustlib/findings.py), one per eps, from its tables
    under `rel` (results/ce-vs-pclc/DATASET, or ce-vs-pclc-l2/DATASET for the L2 threat model)."""
    from .report import TITLES
    study, grid = CE_PCLC_NORMS[norm][:2]
    rel = rel or f"results/{study}/{dataset}"
    return [dict(claim=f"PC + LC vs CE (+ adaptive suite), {TITLES[dataset]}" + ("" if norm == "linf" else ", L2"),
                 table=f"{rel}/seed-{{seed}}",
                 seeds=tuple(seeds), method="pclc/final", reference="ce/final", eps=float(eps), page="docs/reproduction.md")
            for eps in grid[dataset].split(",")]


def ce_pclc_write_up(ctx, dataset, seeds, norm="linf"):
    from . import findings, report
    rel = os.path.relpath(ctx.res, ctx.out)
    rows = ce_pclc_findings(dataset, seeds, rel, norm)
    study, _, title, command = CE_PCLC_NORMS[norm]
    took = report.sweep_timing(ctx.res, r"seed-\d+\.log")
    text = "\n".join([f"## CE vs PC + LC {title}, {report.TITLES[dataset]} (`bash studies/{command}`)", "",
                      f"Work on a 2-core CPU, from the runs' and the jobs' own records: {took['train_s'] / 60:.1f} min "
                      f"training, {took['attack_s'] / 60:.1f} min attacking.", "",
                      f"Seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}; every attack of the default and adaptive suites and the noise "
                      f"floor ({norm}) at `--budget=standard` on the same {ctx.s['N']} test images of each seed's table "
                      f"({rel}/seed-N.md); the difference is PC + LC minus CE: one seed, with its exact McNemar p; "
                      "seeds, mean ± sd with the paired t test's p over seeds (t p) and the seeds whose McNemar p < 0.05.", "", findings.table(rows, ctx.out), "",
                      "What each suite finds alone (mean ± sd over seeds; one seed: its value):", "",
                      report.suites_table([os.path.join(ctx.res, f"seed-{seed}.csv") for seed in seeds],
                                          {"ce/final": "CE", "pclc/final": "PC + LC"}), ""])
    write(os.path.join(ctx.res, "summary.md"), text)
    report.write_section(ctx.path("RESULTS.md"), f"{study}-{dataset}", text)
    print(text)


def ce_pclc_plan(ctx, norm="linf"):
    """Per dataset and seed the CE and PC + LC runs (ce-vs-pclc's, in either threat model: trained
    where absent), their table in `norm` and the write-up."""
    seeds = [int(seed) for seed in ctx.s["SEEDS"].split()]
    study, grid = CE_PCLC_NORMS[norm][:2]
    for dataset in ctx.s["DATASETS"].split():
        ctx.runs, ctx.res = ctx.path("runs", "ce-vs-pclc", dataset), ctx.path("results", study, dataset)
        for seed in seeds:
            for arm in ("ce", "pclc"):
                yield ctx.run(f"seed-{seed}/{arm}", f"--dataset={dataset}", reproduce_runs(dataset)[arm], f"--seed={seed}")
        yield SETTLE
        for seed in seeds:
            yield ctx.table(f"seed-{seed}", [f"seed-{seed}/ce", f"seed-{seed}/pclc"], CE_PCLC_ATTACKS,
                            *(["--norm=l2"] if norm == "l2" else []),
                            f"--eps={grid[dataset]} --n={ctx.s['N']} --n_strong={ctx.s['N']}")
        yield Step(lambda d=dataset: ce_pclc_write_up(ctx, d, seeds, norm), write_up=True)


# ---- lambda-study: the title paper's lambda on Fashion-MNIST (docs/lambda-study.md) --------------------
# SSC lambda in LAMBDAS (preset ssc-lambda-N: the released settings, LeNet-5, 10 epochs), seed 0; the
# best lambda > 0 by the worst case at the training eps; RCC lambda 15; seeds 1, 2 of lambda 0 and the best
LAMBDAS = (0, 10, 50, 100, 300, 500, 1000)
STUDY_EPS = (0.03, 0.06)
STUDY_FIGURE = "Figures/fashion-mnist-ssc-lambda-study.png"
LAMBDA_RUNS = {**{f"lambda-{lam}-seed-{seed}": (f"lambda-{lam}", lam, seed) for lam in LAMBDAS for seed in (0, 1, 2)},
               "rcc-seed-0": ("rcc", None, 0)}  # each run's (row of the table, SSC lambda, seed)


def lambda_write_up(ctx, seconds):
    from . import report
    best = report.best_lambda(os.path.join(ctx.res, "robustness.csv"))
    text, table = report.study_section(ctx.res, best, ctx.invocation(**seconds)["total_s"], ctx.path(STUDY_FIGURE),
                                       STUDY_FIGURE)
    write(os.path.join(ctx.res, "study.md"), text)
    report.write_section(ctx.path("RESULTS.md"), "study", text)
    print("\n".join(table))


def lambda_plan(ctx):
    from . import report
    ctx.runs, ctx.res = ctx.path("runs", "study"), ctx.path("results", "ssc-study")
    attack = f"--eps={','.join(map(str, STUDY_EPS))} --n=1000 --n_strong=200 --budget=standard"
    runs = {f"lambda-{lam}-seed-0": f"--preset=ssc-lambda-{lam}" for lam in LAMBDAS}
    first = list(runs)
    for name in first:
        yield ctx.run(name, runs[name])
    yield ctx.table("robustness", first, attack)
    if ctx.s["STAGE"] != "report":
        yield SETTLE
        csv = os.path.join(ctx.res, "robustness.csv")
        if not os.path.exists(csv):
            print(f"{csv} is not there yet: the runs after the best lambda wait for it (STAGE=attack)")
            return
        best = report.best_lambda(csv)
        print(f"best lambda by the worst case at eps {STUDY_EPS[0]}: {best}")
        runs["rcc-seed-0"] = "--preset=ssc-lambda-0 --struct=rcc --struct_lambda=15 --struct_on=embedding"
        for seed in (1, 2):
            runs[f"lambda-0-seed-{seed}"] = f"--preset=ssc-lambda-0 --seed={seed}"
            runs[f"lambda-{best}-seed-{seed}"] = f"--preset=ssc-lambda-{best} --seed={seed}"
        for name in list(runs)[len(first):]:
            yield ctx.run(name, runs[name])
        yield ctx.table("robustness", natural(runs), attack)
    yield Step(lambda: lambda_write_up(ctx, dict(total_s=ctx.elapsed())), write_up=True)


# ---- mnist-ssc: the title paper's MNIST figure in its own protocol (docs/mnist-ssc-protocol.md) --------
# per point (attack A, eps e, lambda, seed): preset ssc-mnist trained with A at e, attacked with A as
# released (the paper's number) and the suite of record at --budget=standard (the field's number)
GRIDS = {  # FGSM's eps x lambdas; PGD's and MIM's panels; the points that also get seeds 1 and 2
    "cpu": dict(fgsm_eps="0.05 0.1 0.15 0.2 0.25 0.3", fgsm_lambdas="0 10 100 300 1000", panel_eps="0.1 0.3",
                panel_lambdas="0 300", seed_eps="0.1 0.3", seed_lambdas="0 300"),
    "full": dict(fgsm_eps=" ".join(f"{e / 100:.2f}" for e in range(1, 31)), fgsm_lambdas="0 10 50 100 300 500 1000",
                 panel_eps=" ".join(f"{e / 100:.2f}" for e in range(1, 31)), panel_lambdas="0 10 50 100 300 500 1000",
                 seed_eps="0.1 0.3", seed_lambdas="0 300"),
    "tiny": dict(fgsm_eps="0.3", fgsm_lambdas="0 300", panel_eps="0.3", panel_lambdas="0", seed_eps="0.3",
                 seed_lambdas="0"),  # the tests' grid
}
PAPER_ATTACK = {"fgsm": "fgsm", "pgd": "ssc-pgd", "mim": "ssc-mim"}  # the released test attack of each panel
SSC_FIGURE = "Figures/mnist-ssc-protocol.png"


def mnist_ssc_write_up(ctx, labels, seconds):
    from . import report
    record = ctx.invocation(**seconds, cores=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M"))
    report.ssc_points_write_up(ctx.res, labels, ctx.path(SSC_FIGURE), ctx.path("RESULTS.md"), record, ctx.s["GRID"])


def mnist_ssc_plan(ctx):
    ctx.runs, ctx.res = ctx.path("runs", "mnist-ssc"), ctx.path("results", "mnist-ssc-protocol")
    g = GRIDS[ctx.s["GRID"]]
    columns = [("fgsm", eps, [(lam, 0) for lam in g["fgsm_lambdas"].split()]
                + ([(lam, seed) for lam in g["seed_lambdas"].split() for seed in (1, 2)] if eps in g["seed_eps"].split() else []))
               for eps in g["fgsm_eps"].split()]
    columns += [(attack, eps, [(lam, 0) for lam in g["panel_lambdas"].split()])
                for attack in ("pgd", "mim") for eps in g["panel_eps"].split()]
    labels = {}  # each checkpoint's label in the tables: its (attack, eps, lambda, seed), for the write-up
    for attack, eps, points in columns:  # one column: its points, attacked together on the same images
        names = [f"{attack}-eps{eps}-lambda{lam}-seed{seed}" for lam, seed in points]
        for name, (lam, seed) in zip(names, points):
            labels[f"{name}/final"] = (attack, float(eps), int(lam), int(seed))
            yield ctx.run(name, f"--preset=ssc-mnist --adv_train={attack} --adv_eps={eps} --struct_lambda={lam} "
                                f"--seed={seed} --epochs={ctx.s['EPOCHS']}")
        yield ctx.table(f"{attack}-eps{eps}", natural(names),
                        f"--attacks=released,autoattack,adaptive,{PAPER_ATTACK[attack]} --eps={eps} --budget=standard "
                        "--n_strong=200")  # 46 models: 200 images keep the grid to one sitting here
    yield Step(lambda: mnist_ssc_write_up(ctx, labels, dict(total_s=ctx.elapsed())), write_up=True)


# ---- baselines: the field's baselines on MNIST, and the methods on top (docs/baselines.md) -------------
# FGSM-RS (its released recipe, 3 seeds); PGD-AT, TRADES, MART on SmallCNN at BUDGET; PC + LC, SSC, RCC
# (and the split-schedule control where the base has a warm-up) on top of BASE, seed by seed
BASELINES = ("fgsm-rs", "pgd-at", "trades", "mart")
BASES = ("pgd-at", "fgsm-rs")
ON_TOP = {  # arm: (its settings on top of the base, its label in the tables, in their order)
    "split": ("", "control: the base in the arms' warm-up + main schedule"),
    "pclc": ("--loss=pclc", "PC + LC (training loss)"),
    "ssc": ("--struct=ssc --struct_lambda=300 --struct_on=logits --struct_metric=euclidean --struct_in_warmup=false",
            "SSC lambda 300 (logits)"),
    "rcc": ("--struct=rcc --struct_lambda=15 --struct_on=embedding --struct_in_warmup=false", "RCC lambda 15 (features)"),
}


def milestone(epochs):
    """The recipe's LR decay at about 55 % of `epochs` (at least 1)."""
    return max((epochs * 55 + 50) // 100, 1)


def baseline_budget(s):
    """BUDGET's SmallCNN settings (PGD-AT, TRADES, MART: recipe 100 epochs, 40 x 0.01, LR x 0.1 at 55),
    its seeds, the warm-up of the arms on top of PGD-AT (half its epochs on PGD-AT alone, each phase
    with the recipe's decay), and settings for every run."""
    if s["BUDGET"] == "gpu":
        e = int(s["GPU_EPOCHS"])
        h = max(e // 2, 1)
        return dict(smallcnn=f"--epochs={e} --milestones={milestone(e)} {s['GPU_EXTRA']}", seeds="0 1 2",
                    warm=f"--warmup_epochs={h} --epochs={h} --milestones={milestone(h)}", every="")
    return dict(cpu=dict(smallcnn="--epochs=4 --adv_steps=10 --adv_step_size=0 --milestones=3", seeds="0 1 2",
                         warm="--warmup_epochs=2 --epochs=2 --milestones=1", every=""),
                full=dict(smallcnn="", seeds="0 1 2", warm="--warmup_epochs=50 --epochs=50 --milestones=28", every=""),
                tiny=dict(smallcnn="--epochs=1 --adv_steps=2 --adv_step_size=0 --milestones=1", seeds="0",
                          warm="--warmup_epochs=1 --epochs=1 --milestones=1", every="--epochs=1"))[s["BUDGET"]]


def seeded(method, seed):
    """The run name of `method`'s seed `seed` (the base and the arms on top; FGSM-RS)."""
    return f"{method}-seed-{seed}"


def baseline_labels(s):
    """Each checkpoint's label in the baselines' tables (adv_testing.py names a run by its folder): its
    (method, seed), for every base and arm and the seeds of the BUDGET (or SEEDS)."""
    seeds = (s["SEEDS"] or baseline_budget(s)["seeds"]).split()
    labels = {f"{seeded(method, seed)}/final": (method, int(seed)) for seed in seeds for method in ("fgsm-rs", *BASES, *ON_TOP)}
    return {**labels, "pgd-at-seed-0/final": ("pgd-at", 0), "trades/final": ("trades", 0), "mart/final": ("mart", 0)}


def baselines_write_up(ctx, seconds):
    from . import report
    text = report.baselines_section(ctx.res, ctx.invocation(**seconds)["total_s"], baseline_labels(ctx.s))
    write(os.path.join(ctx.res, "summary.md"), text)
    report.write_section(ctx.path("RESULTS.md"), "mnist-baselines", text)
    print(text)


def baselines_plan(ctx):
    s, b = ctx.s, baseline_budget(ctx.s)
    ctx.runs, ctx.res = ctx.path("runs", "mnist-baselines"), ctx.path("results", "mnist-baselines")
    seeds, base, every = (s["SEEDS"] or b["seeds"]).split(), s["BASE"], b["every"]
    own = {"pgd-at": b["smallcnn"], "fgsm-rs": ""}[base]  # the base's settings beside its preset
    warm = {"pgd-at": b["warm"], "fgsm-rs": ""}[base]  # FGSM-RS: its cyclic schedule is not split
    arms = [arm for arm in sorted(ON_TOP, key=lambda a: a == "split") if arm != "split" or warm]  # the control last
    if s["PART"] != "on-top":
        yield ctx.run(seeded("pgd-at", 0), "--preset=pgd-at-mnist --seed=0", b["smallcnn"], every)
        for method in ("trades", "mart"):
            yield ctx.run(method, f"--preset={method}-mnist", b["smallcnn"], every)
        for seed in seeds:
            yield ctx.run(seeded("fgsm-rs", seed), f"--preset=fgsm-rs-mnist --seed={seed}", every)
    if s["PART"] != "baselines":
        for seed in seeds:
            yield ctx.run(seeded(base, seed), f"--preset={base}-mnist --seed={seed}", own, every)
            for arm in arms:
                yield ctx.run(f"on-{base}/{seeded(arm, seed)}", f"--preset={base}-mnist --seed={seed}", own, warm,
                              ON_TOP[arm][0], every)
    yield SETTLE
    baselines = [seeded("pgd-at", 0), "trades", "mart", seeded("fgsm-rs", 0)]
    if s["PART"] != "on-top":
        yield ctx.table("baselines", baselines, f"--eps={s['EPS']} --budget=standard")
        # the default quick budget (10 iterations) at the largest eps: does it part from the standard one?
        yield ctx.table("quick-budget/baselines", baselines, f"--eps={s['EPS'].split(',')[-1]} --budget=quick")
    if s["PART"] != "baselines":
        for seed in seeds:
            yield ctx.table(f"on-{base}/seed-{seed}", [seeded(base, seed)] + [f"on-{base}/{seeded(a, seed)}" for a in arms],
                            f"--eps={s['EPS']} --budget=standard")
    yield SETTLE
    yield Step(lambda: baselines_write_up(ctx, dict(total_s=ctx.elapsed())), write_up=True)


STUDIES = {
    "reproduce": Study("PC-LC's comparison per dataset", dict(
        DATASETS=Setting("fashion-mnist mnist", **words(r"fashion-mnist|mnist|digits",
                                                         "allowed fashion-mnist, mnist (digits for tests)")),
        FIGURE_EXTRA=Setting("", **ANY)), reproduce_plan),
    "ce-vs-pclc": Study("CE against PC + LC over seeds with the adaptive suite", dict(
        DATASETS=Setting("fashion-mnist mnist", **words(r"fashion-mnist|mnist|digits",
                                                         "allowed fashion-mnist, mnist (digits for tests)")),
        SEEDS=Setting("0 1 2", **words(r"\d+", "seeds as whole numbers separated by spaces")),
        N=Setting("1000", **words(r"[1-9]\d*", "a whole number >= 1"))), ce_pclc_plan),
    "ce-vs-pclc-l2": Study("CE against PC + LC in the L2 threat model (the runs of ce-vs-pclc)", dict(
        DATASETS=Setting("fashion-mnist mnist", **words(r"fashion-mnist|mnist|digits",
                                                         "allowed fashion-mnist, mnist (digits for tests)")),
        SEEDS=Setting("0", **words(r"\d+", "seeds as whole numbers separated by spaces")),
        N=Setting("500", **words(r"[1-9]\d*", "a whole number >= 1"))), lambda ctx: ce_pclc_plan(ctx, "l2")),
    "lambda-study": Study("the title paper's lambda on Fashion-MNIST", {}, lambda_plan),
    "mnist-ssc": Study("the title paper's MNIST figure in its own protocol", dict(
        GRID=Setting("cpu", **choice(*GRIDS)), EPOCHS=Setting("3", **words(r"[1-9]\d*", "a whole number >= 1"))),
        mnist_ssc_plan),
    "baselines": Study("the field's baselines on MNIST and the methods on top", dict(
        PART=Setting("all", **choice("all", "baselines", "on-top")), BUDGET=Setting("cpu", **choice("cpu", "full", "gpu", "tiny")),
        GPU_EPOCHS=Setting("100", **words(r"[1-9]\d*", "a whole number >= 1")), GPU_EXTRA=Setting("", **ANY),
        EPS=Setting("0.1,0.2,0.3", **ANY), BASE=Setting("pgd-at", **choice(*BASES)),
        SEEDS=Setting("", allowed=lambda v: re.fullmatch(r"(\d+( \d+)*)?", v) is not None,
                      text="seeds as whole numbers separated by spaces")), baselines_plan),
}
