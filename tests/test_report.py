"""report.py: RESULTS.md's sections from the files under results/ alone (the runs' records in
RES/training/), on small hand-made inputs, written through the runner's STAGE=report."""
import json
import os

import pandas as pd
import pytest

from robustlib import report, studies
from robustlib import study as runner
from robustlib.errors import run


def log(res, name, test_acc, gap, seconds, epochs=2):
    """A run's training record as the runner keeps it: RES/training/NAME.log.csv."""
    os.makedirs(res / "training", exist_ok=True)
    pd.DataFrame({"phase": ["main"] * epochs, "epoch": range(1, epochs + 1), "test_acc": [0.1] * (epochs - 1) + [test_acc],
                  "prob_gap": [0.0] * (epochs - 1) + [gap], "seconds": [seconds] * epochs}).to_csv(
        res / "training" / f"{name}.log.csv", index=False)


def invocation(res, **seconds):
    (res / "invocation.json").write_text(json.dumps(seconds))


def worst_rows(checkpoint, acc03, acc06):
    return [dict(checkpoint=checkpoint, attack="worst", eps=eps, accuracy=acc, ci_low=acc - 0.05,
                 ci_high=acc + 0.05, n=200, budget="standard") for eps, acc in ((0.03, acc03), (0.06, acc06))]


@pytest.fixture
def study(tmp_path):
    res = tmp_path / "out" / "results" / "ssc-study"
    res.mkdir(parents=True)
    rows = []
    table = {"lambda-0": [(0.50, 0.20), (0.54, 0.22), (0.52, 0.18)], "lambda-10": [(0.61, 0.30)],
             "lambda-300": [(0.58, 0.35), (0.60, 0.33), (0.62, 0.31)], "rcc": [(0.70, 0.40)]}
    for name, seeds in table.items():
        for seed, (a, b) in enumerate(seeds):
            log(res, f"{name}-seed-{seed}", 0.8 + seed / 100, 0.5, 10.0)
            rows += worst_rows(f"{name}-seed-{seed}/final", a, b)
    pd.DataFrame(rows).to_csv(res / "robustness.csv", index=False)
    (res / "robustness.md").write_text("THE ATTACK TABLE\n")
    invocation(res, total_s=60.0)
    return res


def test_best_lambda_ignores_lambda_0_and_rcc(study):
    res = study
    assert report.best_lambda(res / "robustness.csv") == "10"  # 61 % at 0.03; rcc's 70 % does not count
    frame = pd.read_csv(res / "robustness.csv")
    frame = frame[~frame.checkpoint.str.startswith("lambda-10-")]
    frame.to_csv(res / "other.csv", index=False)
    assert report.best_lambda(res / "other.csv") == "300"  # seed 0 alone decides: 58 %


def test_study_rows_interval_or_spread(study):
    res = study
    t = report.study_table(res / "robustness.csv")
    clean = {name: log.test_acc.iloc[-1] for name, log in report.training_records(res).items()}
    rows, points = report.study_rows(t, clean)
    assert rows[0] == "| lambda 0 (plain FGSM adversarial training) | 3 | 81.00 | 52.0 ± 2.0 (sd) | 20.0 ± 2.0 (sd) |"
    assert rows[1] == "| SSC lambda 10 | 1 | 80.00 | 61.0 [56.0, 66.0] | 30.0 [25.0, 35.0] |"
    assert rows[2].startswith("| SSC lambda 300 | 3 | 81.00 | 60.0 ± 2.0 (sd) | 33.0 ± 2.0 (sd) |")
    assert rows[3].startswith("| RCC lambda 15 (features) | 1 |")
    assert [r for r, _, _ in points[0.06]] == ["lambda-0", "lambda-10", "lambda-300", "rcc"]
    assert points[0.06][2][1:] == pytest.approx((33.0, 2.0))
    assert t[t.checkpoint == "lambda-300-seed-2/final"][["run", "lambda", "seed"]].iloc[0].tolist() == ["lambda-300", 300, 2]
    frame = pd.read_csv(res / "robustness.csv")
    frame.loc[0, "checkpoint"] = "lambda-7-seed-0/final"  # not a lambda of the definition: one line, no guess
    frame.to_csv(res / "other.csv", index=False)
    with pytest.raises(report.UserError, match="lambda-7-seed-0 is not a run of the lambda study's definition"):
        report.study_table(res / "other.csv")


def repro_inputs(tmp_path, dataset, accs, trained_s, total_s):
    """What the reproduction leaves under results/ for one dataset: the runs' records, the attack
    table, the invocation's seconds; and the figures' note."""
    out = tmp_path / "out"
    res = out / "results" / f"{dataset}-lenet5"
    res.mkdir(parents=True)
    rows = []
    for name, acc in zip(studies.reproduce_runs(dataset), accs):
        log(res, name, acc, 0.6, 30.0, epochs=3)
        rows.append(dict(checkpoint=f"{name}/final", attack="clean", eps=0.0, accuracy=acc, ci_low=acc - 0.01,
                         ci_high=acc + 0.01, n=10000, budget="standard"))
        for eps in (0.1, 0.3):
            rows.append(dict(checkpoint=f"{name}/final", attack="worst", eps=eps, accuracy=acc - eps,
                             ci_low=acc - eps - 0.05, ci_high=acc - eps + 0.05, n=200, budget="standard"))
    pd.DataFrame(rows).to_csv(res / "robustness.csv", index=False)
    (res / "robustness.md").write_text(f"REPRO TABLE {dataset}\n")
    invocation(res, trained_s=trained_s, total_s=total_s)
    (out / "Figures").mkdir(parents=True, exist_ok=True)
    (out / "Figures" / f"{dataset}-lenet5-figures.md").write_text(f"# Figures for {dataset}\n")
    return res, out


def write_up(name, out, **settings):
    """The study's write-up alone, as `STAGE=report python -m robustlib.study NAME` makes it."""
    return run(runner.main, [name, "STAGE=report", f"STUDY_OUT={out}", *(f"{k}={v}" for k, v in settings.items())])


def test_summary_table_worst_per_eps_and_published_rows(tmp_path):
    res, out = repro_inputs(tmp_path, "mnist", (0.99, 0.98, 0.95), 60, 90)
    runs = list(studies.reproduce_runs("mnist"))
    lines = report.summary_table(res, "mnist", runs).splitlines()
    assert lines[0] == "| model | clean (%) | worst eps 0.1 (%) | worst eps 0.3 (%) |"
    assert lines[2] == "| ce | 99.0 [98.0, 100.0] | 89.0 [84.0, 94.0] | 69.0 [64.0, 74.0] |"
    assert lines[4] == "| adv | 95.0 [94.0, 96.0] | 85.0 [80.0, 90.0] | 65.0 [60.0, 70.0] |"
    assert lines[5] == "| TRADES (SmallCNN): published, Croce & Hein 2020, AutoAttack | 99.48 | - | 92.81 (published) |"
    assert len(lines) == 2 + 3 + len(report.PUBLISHED["mnist"])
    frame = pd.read_csv(res / "robustness.csv")
    frame[frame.checkpoint != "pclc/final"].to_csv(res / "robustness.csv", index=False)
    with pytest.raises(report.UserError, match="pclc/final"):
        report.summary_table(res, "mnist", runs)


def test_sections_replace_only_their_own_part(study, tmp_path):
    repro_inputs(tmp_path, "fashion-mnist", (0.91, 0.9, 0.8, 0.79), 120, 300)
    _, out = repro_inputs(tmp_path, "mnist", (0.99, 0.98, 0.95), 60, 90)
    (out / "RESULTS.md").write_text("# old head\n\n<!-- study -->\nOLD STUDY\n<!-- /study -->\n")
    assert write_up("reproduce", out, DATASETS="fashion-mnist") == 0
    text = (out / "RESULTS.md").read_text()
    assert "old head" not in text and text.endswith("<!-- study -->\nOLD STUDY\n<!-- /study -->\n")
    assert text.startswith("# Results\n\n<!-- reproduce-fashion-mnist -->\n## LeNet-5 on Fashion-MNIST")
    assert "| ce | 3 | 91.00% | 0.6000 | 90 s |" in text and "| adv-struct | 3 | 79.00% |" in text
    assert "took 5.0 min, of which 2.0 min training" in text and "training all 4 runs takes 6.0 min" in text
    assert "REPRO TABLE fashion-mnist" in text and "### Figures for fashion-mnist" in text
    assert "| PGD-AT: published, Croce, Andriushchenko & Hein 2019, 1,000 points | 88.46 | <= 78.5 (published) | - |" in text
    assert write_up("reproduce", out, DATASETS="mnist") == 0
    both = (out / "RESULTS.md").read_text()
    fashion_part = text.split("<!-- study -->")[0]
    assert both.startswith(fashion_part)  # the Fashion-MNIST section unchanged, MNIST's after it
    assert both.index("<!-- reproduce-mnist -->") < both.index("<!-- study -->")
    assert "REPRO TABLE mnist" in both and "training all 3 runs takes 4.5 min" in both
    assert "OLD STUDY" in both and "Figures/mnist-lenet5-tsne.png" in both
    assert write_up("lambda-study", out) == 0
    after = (out / "RESULTS.md").read_text()
    assert after.startswith(both.split("<!-- study -->")[0])  # both reproductions unchanged
    assert "OLD STUDY" not in after and "Best lambda > 0 by the worst case at eps 0.03 (seed 0): 10" in after
    assert after.count("<!-- study -->") == 1 and "THE ATTACK TABLE" in after
    assert (study / "study.md").read_text() in after
    assert (out / "Figures" / "fashion-mnist-ssc-lambda-study.png").stat().st_size > 0
    invocation(out / "results" / "mnist-lenet5", trained_s=60, total_s=30)
    assert write_up("reproduce", out, DATASETS="mnist") == 0  # rewritten alone
    again = (out / "RESULTS.md").read_text()
    assert again.replace("took 0.5 min", "took 1.5 min") == after and after.count("<!-- reproduce-mnist -->") == 1


def test_bad_input_is_one_line(tmp_path, capsys):
    res, out = repro_inputs(tmp_path, "mnist", (0.99, 0.98, 0.95), 60, 90)
    assert run(runner.main, ["nosuch"]) == 2
    assert write_up("reproduce", out, DATASETS="cifar10") == 2
    assert write_up("reproduce", out, DATASETS="mnist", COLOUR="red") == 2
    os.remove(res / "training" / "pclc.log.csv")
    assert write_up("reproduce", out, DATASETS="mnist") == 2
    os.remove(res / "invocation.json")
    assert write_up("reproduce", out, DATASETS="mnist") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)
    assert err[1] == "error: DATASETS=cifar10 is out of range: allowed fashion-mnist, mnist (digits for tests)"
    assert "COLOUR=red: settings are SETTING=VALUE" in err[2]
    assert "training holds no record of pclc" in err[3] and "invocation.json is missing" in err[4]


def test_warnings_of_finds_every_warning_of_its_label():
    md = ("- a/final: PGD at eps 0.5 leaves 0.0% accuracy\n"
          "- a/final: PGD at eps 0.5 leaves 11.0% accuracy -- WARNING: it should reach about 0; gradients may be masked\n"
          "- a/final: WARNING the released attacks overstate robustness by 4.5 points at eps 0.3\n"
          "- ab/final: WARNING other model\n")
    got = report.warnings_of(md, "a/final")
    assert got == ["PGD at eps 0.5 leaves 11.0% accuracy -- WARNING: it should reach about 0; gradients may be masked",
                   "WARNING the released attacks overstate robustness by 4.5 points at eps 0.3"]


def test_sweep_timing_counts_each_job_at_its_last_computation(tmp_path):
    """A table's log keeps the lines of earlier runs under the same names: a retrained model's jobs
    replace them, cached lines cost nothing, and logs of other names are not read."""
    (tmp_path / "fgsm-eps0.1.log").write_text("\n".join([
        "2026-12-02 16:35:35  a/final  apgd-ce  eps 0.1  accuracy 0.9000  n 200  computed in 5.0 s",  # the older run
        "2026-12-02 16:35:40  a/final  square  eps 0.1  accuracy 0.9100  n 200  computed in 1.5 s",
        "2026-12-06 03:33:45  a/final  apgd-ce  eps 0.1  accuracy 0.8000  n 200  computed in 2.0 s",  # its rerun
        "2026-12-06 03:33:50  a/final  square  eps 0.1  accuracy 0.9100  n 200  cached", ""]))
    (tmp_path / "other.log").write_text("2026-12-06 03:33:45  b/final  fgsm  eps 0.1  accuracy 0.5  n 9  computed in 9.0 s\n")
    assert report.sweep_timing(str(tmp_path)) == dict(train_s=0.0, attack_s=3.5)
