"""The lambda study end to end on digits (one epoch a run, small attack budgets): the seven lambdas,
the best lambda > 0 read from their table, then RCC and seeds 1 and 2 of lambda 0 and the best, the
table of every run, the write-up; STAGE=report rewrites it byte for byte from results/ alone."""
import pandas as pd
import pytest

from conftest import run_script
from robustlib import report, studies

ENV = dict(EXTRA="--dataset=digits --epochs=1 --lr=0.05",
           ATTACK_EXTRA="--n=16 --n_strong=8 --attacks=fgsm,pgd")


@pytest.mark.slow
def test_lambda_study_on_digits(root, tmp_path):
    done = run_script("studies/study.sh", dict(ENV, STUDY_OUT=str(tmp_path)))
    assert done.returncode == 0, done.stderr[-2000:]
    res = tmp_path / "results/ssc-study"
    best = report.best_lambda(res / "robustness.csv")
    assert f"best lambda by the worst case at eps {studies.STUDY_EPS[0]}: {best}" in done.stdout
    runs = {f"lambda-{lam}-seed-0" for lam in studies.LAMBDAS} | {"rcc-seed-0"} | {
        f"lambda-{lam}-seed-{seed}" for lam in (0, best) for seed in (1, 2)}
    table = pd.read_csv(res / "robustness.csv")
    assert set(table.checkpoint.str[:-len("/final")]) == runs and done.stdout.count(" trained ") == len(runs)
    assert {f.name[:-len(".log.csv")] for f in (res / "training").glob("*.log.csv")} == runs
    assert "--struct=rcc --struct_lambda=15" in (res / "training/rcc-seed-0.command.txt").read_text()
    written = (tmp_path / "RESULTS.md").read_text()
    assert f"Best lambda > 0 by the worst case at eps 0.03 (seed 0): {best}" in written
    again = run_script("studies/study.sh", dict(ENV, STUDY_OUT=str(tmp_path), STAGE="report"))
    assert again.returncode == 0 and (tmp_path / "RESULTS.md").read_text() == written
