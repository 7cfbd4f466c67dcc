"""baselines.sh end to end on its tiny budget (digits instead of MNIST, one epoch, small attack
budgets), and report.py's baselines tables on hand-made inputs."""
import os

import pandas as pd
import pytest

from robustlib import report, studies
from conftest import run_script

# the labels of the hand-made tables: the definition's (its pgd-at seed 0 here named as the old tables did)
LABELS = {**studies.baseline_labels(dict(SEEDS="0 1 2", BUDGET="cpu")), "pgd-at/final": ("pgd-at", 0)}

ENV = dict(BUDGET="tiny", EXTRA="--dataset=digits", EPS="0.1,0.3",
           ATTACK_EXTRA="--n=16 --n_strong=8 --apgd_steps=2 --fab_steps=2 --square_queries=10 --spsa_iters=2")


def baselines(root, out, **extra):
    return run_script("studies/baselines.sh", dict(ENV, STUDY_OUT=str(out), **extra))


@pytest.mark.slow
def test_tiny_baselines_and_rerun(root, tmp_path):
    first = baselines(root, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    res = tmp_path / "results/mnist-baselines"
    assert sorted(f for f in os.listdir(res) if f.endswith(".csv")) == ["baselines.csv"]
    on_top = pd.read_csv(res / "on-pgd-at/seed-0.csv")  # BASE: pgd-at by default
    assert sorted(on_top.checkpoint.unique()) == ["pclc-seed-0/final", "pgd-at-seed-0/final", "rcc-seed-0/final",
                                                  "split-seed-0/final", "ssc-seed-0/final"]
    assert first.stdout.count(" trained ") == 8 and first.stdout.count(" attacked ") == 3
    # one job cache for every table: pgd-at-seed-0, in the baselines table too, is attacked once
    log = (res / "on-pgd-at/seed-0.log").read_text().splitlines()
    base = [line for line in log if "  pgd-at-seed-0/final  " in line]
    assert base and all(line.endswith("cached") for line in base)
    assert not any(line.endswith("cached") for line in log if line not in base)
    assert not (res / "baselines.cache").exists() and (res / "jobs.cache").is_dir()
    quick = pd.read_csv(res / "quick-budget/baselines.csv")  # the budget check: the largest eps only
    assert list(quick[quick.attack == "worst"].eps.unique()) == [0.3] and quick.checkpoint.nunique() == 4
    text = (res / "summary.md").read_text()
    assert "| attack | eps | n | budget | pgd-at-seed-0/final |" in (res / "baselines.md").read_text()  # adv_testing's own table stays
    assert "| TRADES (SmallCNN): published, Croce & Hein 2020, AutoAttack | - | - | 99.48 | - | 92.81 (published) |" in text
    assert text.count("| PC + LC (training loss) |") == 2 and "| trades | 1 |" in text
    assert "### Budget check" in text and text.count("| 0.3 | 8 |") == 4  # one row per baseline, n_strong 8
    assert "### On top of pgd-at" in text and "| pgd-at | 1 |" in text
    command = (tmp_path / "runs/mnist-baselines/on-pgd-at/ssc-seed-0/command.txt").read_text()
    assert (res / "training/on-pgd-at_ssc-seed-0.command.txt").read_text() == command  # records beside the tables
    assert "| on-pgd-at/ssc-seed-0 | 2 |" in text  # its training row: the warm-up epoch and the main one
    assert len(pd.read_csv(res / "training/mart.log.csv")) == 1 and (res / "training/mart.train.log").exists()
    assert ("--preset=pgd-at-mnist --seed=0 --epochs=1 --adv_steps=2 --adv_step_size=0 --milestones=1 --warmup_epochs=1 "
            "--epochs=1 --milestones=1 --struct=ssc --struct_lambda=300 --struct_on=logits") in command  # budget, warm-up, method
    assert "--struct_in_warmup=false" in command
    assert "| control: the base in the arms' warm-up + main schedule | 0.3 | 1 |" in text
    for method in ("pclc", "ssc", "rcc", "split"):  # the base's warm-up epoch, then the method's
        assert list(pd.read_csv(res / f"training/on-pgd-at_{method}-seed-0.log.csv").phase) == ["warmup", "main"]
    assert "<!-- mnist-baselines -->" in (tmp_path / "RESULTS.md").read_text()
    second = baselines(root, tmp_path, PART="on-top")
    assert second.returncode == 0, second.stderr[-2000:]
    rewritten = (res / "summary.md").read_text()
    assert " trained " not in second.stdout  # nothing trained again, the same tables (all but the timing)
    assert rewritten.split("### Baselines")[1] == text.split("### Baselines")[1]


@pytest.mark.parametrize("setting, message", [
    (dict(PART="some"), "error: PART=some is out of range: allowed all, baselines, on-top"),
    (dict(BUDGET="huge"), "error: BUDGET=huge is out of range: allowed cpu, full, gpu, tiny"),
    (dict(BASE="trades"), "error: BASE=trades is out of range: allowed pgd-at, fgsm-rs"),
    (dict(SEEDS="0,1"), "error: SEEDS=0,1 is out of range: seeds as whole numbers separated by spaces")])
def test_bad_settings_are_one_line(root, tmp_path, setting, message):
    bad = baselines(root, tmp_path, **setting)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [message]


def rows(checkpoint, clean, worst):
    out = [dict(checkpoint=checkpoint, attack="clean", eps=0.0, accuracy=clean, ci_low=clean - 0.01,
                ci_high=clean + 0.01, n=10000, budget="standard")]
    return out + [dict(checkpoint=checkpoint, attack="worst", eps=eps, accuracy=acc, ci_low=acc - 0.05,
                       ci_high=acc + 0.05, n=200, budget="standard") for eps, acc in worst.items()]


@pytest.fixture
def tables(tmp_path):
    """Two seeds of FGSM-RS and SSC on top, one PGD-AT; SSC + 4 and + 2 points at eps 0.3."""
    res = tmp_path / "res"
    res.mkdir()
    base = rows("pgd-at/final", 0.98, {0.3: 0.80}) + rows("fgsm-rs-seed-0/final", 0.97, {0.3: 0.70})
    pd.DataFrame(base).to_csv(res / "baselines.csv", index=False)
    (res / "baselines.md").write_text("| pgd-at/final - fgsm-rs-seed-0/final | 0.3 | +10.0 | 0.001 | beyond noise |\n")
    for seed, (b, a, p) in enumerate(((0.70, 0.74, 0.01), (0.72, 0.74, 0.3))):
        pd.DataFrame(rows(f"fgsm-rs-seed-{seed}/final", 0.97, {0.3: b}) + rows(f"ssc-seed-{seed}/final", 0.96 - 0.02 * seed, {0.3: a})
                     ).to_csv(res / f"on-top-seed-{seed}.csv", index=False)
        (res / f"on-top-seed-{seed}.md").write_text(
            f"| fgsm-rs-seed-{seed}/final - ssc-seed-{seed}/final | 0.3 | {100 * (b - a):+.1f} | {p} | x |\n")
    return res


def test_baselines_table_seeds_and_anchors(tables):
    t, lines = report.runs_table(tables, LABELS)
    assert len(t[t.checkpoint == "fgsm-rs-seed-0/final"]) == 2  # in two tables, counted once
    assert t[t.checkpoint == "ssc-seed-1/final"][["method", "seed"]].drop_duplicates().values.tolist() == [["ssc", 1]]
    with pytest.raises(report.UserError, match="pgd-at/final is not a run of the study's definition"):
        report.runs_table(tables, studies.baseline_labels(dict(SEEDS="0 1 2", BUDGET="cpu")))
    got = report.baselines_table(t, [0.3]).splitlines()
    assert got[2] == "| fgsm-rs | 2 | 200 | 97.0 ± 0.0 | 71.0 ± 1.4 |"
    assert got[3] == "| pgd-at | 1 | 200 | 98.0 [97.0, 99.0] | 80.0 [75.0, 85.0] |"
    assert got[4].startswith("| TRADES (SmallCNN): published") and len(got) == 4 + len(report.PUBLISHED["mnist"])
    t.loc[(t.checkpoint == "fgsm-rs-seed-1/final") & (t.attack == "worst"), "n"] = 1000  # the images each table had
    assert report.baselines_table(t, [0.3]).splitlines()[2] == "| fgsm-rs | 2 | 200, 1000 | 97.0 ± 0.0 | 71.0 ± 1.4 |"


def test_on_top_difference_is_method_minus_baseline(tables):
    t, lines = report.runs_table(tables, LABELS)
    extra = pd.DataFrame(rows("fgsm-rs-seed-2/final", 0.5, {}))  # a seed the method lacks: not in its clean
    t = pd.concat([t, extra.assign(method="fgsm-rs", seed=2)])
    got = report.on_top_table(t, lines, [0.3]).splitlines()
    assert got[0].startswith("| method | eps | seeds | n | clean (%): method / fgsm-rs | worst (%) |")
    assert got[2] == "| SSC lambda 300 (logits) | 0.3 | 2 | 200 | 95.0 ± 1.4 / 97.0 ± 0.0 | 74.0 ± 0.0 | 3.0 ± 1.4 | 0.01, 0.3 | 1 of 2 |"
    suites = pd.DataFrame(dict(attack=["worst", "worst-released", "worst-adaptive"]))  # the heading's words
    assert report.suites_run(suites) == "released, adaptive" and report.suites_run(suites[:1]) == ""
    (tables / "on-top-seed-1.md").write_text("")
    t, lines = report.runs_table(tables, LABELS)
    with pytest.raises(report.UserError, match="ssc-seed-1/final with fgsm-rs-seed-1/final at eps 0.3"):
        report.on_top_table(t, lines, [0.3])


def test_budget_check_is_quick_minus_standard(tables):
    t, _ = report.runs_table(tables, LABELS)
    assert report.budget_check(t, tables) == []  # no quick-budget table: no section
    (tables / "quick-budget").mkdir()
    quick = rows("pgd-at/final", 0.98, {0.3: 0.815}) + rows("fgsm-rs-seed-0/final", 0.97, {0.3: 0.705})
    quick.append(dict(quick[1], attack="apgd-ce", accuracy=0.9))  # an attack's row: not the worst case
    pd.DataFrame(quick).to_csv(tables / "quick-budget/baselines.csv", index=False)
    got = report.budget_check(t, tables)
    assert got[4] == "| pgd-at | 0.3 | 200 | 80.0 [75.0, 85.0] | 81.5 [76.5, 86.5] | +1.5 |"
    assert got[5] == "| fgsm-rs-seed-0 | 0.3 | 200 | 70.0 [65.0, 75.0] | 70.5 [65.5, 75.5] | +0.5 |"
    assert got[7].startswith("The quick budget leaves up to +1.5 points more than the standard one")
    quick[1]["accuracy"] = 0.80  # pgd-at's worst: level with standard
    pd.DataFrame(quick).to_csv(tables / "quick-budget/baselines.csv", index=False)
    assert report.budget_check(t, tables)[7] == ("The quick budget is within 1 point of the standard one on "
                                                  "every baseline (largest +0.5).")
    pd.DataFrame(rows("mart/final", 0.9, {0.3: 0.5})).to_csv(tables / "quick-budget/baselines.csv", index=False)
    with pytest.raises(report.UserError, match="mart/final at eps 0.3 has no standard-budget row"):
        report.budget_check(t, tables)


def test_training_table_comes_from_the_records_beside_the_tables(tables):
    """summary.md needs RES alone (no checkpoints: a fresh machine rebuilds it from the committed files)."""
    folder = tables / "training"
    folder.mkdir()
    for flat, accs in (("pgd-at-seed-0", [0.9, 0.95]), ("on-pgd-at_ssc-seed-0", [0.5, 0.1135, 0.1135])):
        pd.DataFrame(dict(test_acc=accs, seconds=[60.0] * len(accs))).to_csv(folder / f"{flat}.log.csv", index=False)
        (folder / f"{flat}.train.log").write_text("not a log.csv\n")
        (folder / f"{flat}.command.txt").write_text("python vgg_training.py\n")
    assert list(report.training_records(str(tables))) == ["on-pgd-at/ssc-seed-0", "pgd-at-seed-0"]
    text = report.baselines_section(str(tables), 60.0, LABELS)
    assert text.endswith("| on-pgd-at/ssc-seed-0 | 3 | 11.35 | 3.0 |\n| pgd-at-seed-0 | 2 | 95.00 | 2.0 |\n")
    assert report.training_records(str(tables / "elsewhere")) == {}  # no training folder: no rows
    assert "Read first" not in text
    (tables / "CLAMPED-START.md").write_text("# The rows here are an ablation\n\nmore\n")  # a note on old runs
    assert "**Read first (CLAMPED-START.md):** The rows here are an ablation.\n" in report.baselines_section(str(tables), 60.0, LABELS)


@pytest.mark.slow
def test_gpu_script_end_to_end_on_digits(root, tmp_path):
    """gpu.sh on the CPU at a tiny size: the probe, the sized training of every run at once, the
    archives (checkpoints and records), the attacks and the report: the lent GPU's code path."""
    env = dict(SEEDS="0", EXTRA="--dataset=digits --collapse_check=64", GPU_EXTRA="--adv_steps=1",
               ATTACK_EXTRA="--attacks=fgsm,pgd", TRAIN_S="5", ATTACK_S="300", MAX_EPOCHS="1", N="40",
               EPS="0.3", GPU_OUT=str(tmp_path / "g"), PACK=str(tmp_path / "pack"), OMP_NUM_THREADS="1")
    done = run_script("studies/gpu.sh", env)
    assert done.returncode == 0, done.stderr[-2000:]
    res = tmp_path / "g/results/mnist-baselines"
    assert (res / "gpu-plan.txt").read_text().startswith("GPU_EPOCHS=1 ")  # MAX_EPOCHS caps the sizing
    packs = sorted(os.listdir(tmp_path / "pack"))
    assert packs == ["results.tgz.part-00", "runs.tgz.part-00"]
    import tarfile
    with tarfile.open(tmp_path / "pack/runs.tgz.part-00") as tar:
        names = tar.getnames()
    runs = {n.split("/")[-2] for n in names if n.endswith("/final.pt")}
    assert runs == {"pgd-at-seed-0", "trades", "mart", "fgsm-rs-seed-0", "pclc-seed-0", "ssc-seed-0", "rcc-seed-0",
                    "split-seed-0"}
    assert len(pd.read_csv(res / "training/pgd-at-seed-0.log.csv")) == 1
    assert "--adv_steps=1" in (res / "training/pgd-at-seed-0.command.txt").read_text()
    assert "### On top of pgd-at" in (res / "summary.md").read_text()


def test_a_base_rerun_on_top_wins_over_the_older_table(tables):
    """The same checkpoint name in RES/baselines.csv (an older run) and in RES/on-fgsm-rs/ (its rerun):
    the summary's baselines table takes the on-top table's rows."""
    top = tables / "on-fgsm-rs"
    top.mkdir()
    for seed in (0, 1):
        pd.DataFrame(rows(f"fgsm-rs-seed-{seed}/final", 0.98, {0.3: 0.80}) + rows(f"pclc-seed-{seed}/final", 0.9, {0.3: 0.5})
                     ).to_csv(top / f"seed-{seed}.csv", index=False)
        (top / f"seed-{seed}.md").write_text(f"| fgsm-rs-seed-{seed}/final - pclc-seed-{seed}/final | 0.3 | +30.0 | 0.001 | x |\n")
    older = pd.read_csv(tables / "baselines.csv")  # the older run also has eps 0.1, which the rerun lacks
    eps_01 = rows("fgsm-rs-seed-0/final", 0.97, {0.1: 0.9})[1:] + rows("pgd-at/final", 0.98, {0.1: 0.85})[1:]
    pd.concat([older, pd.DataFrame(eps_01)]).to_csv(tables / "baselines.csv", index=False)
    text = report.baselines_section(str(tables), 60.0, LABELS)
    # not baselines.csv's 70.0 for seed 0 at eps 0.3, nor its 90.0 at eps 0.1: the older run is gone whole
    assert "| fgsm-rs | 2 | 200 | 98.0 ± 0.0 | - | 80.0 ± 0.0 |" in text
    assert "| pgd-at | 1 | 200 | 98.0 [97.0, 99.0] | 85.0 [80.0, 90.0] | 80.0 [75.0, 85.0] |" in text
