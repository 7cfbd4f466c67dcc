"""study_mnist.sh end to end on its tiny grid (digits instead of MNIST, one epoch, small attack
budgets): every point trained and attacked, points.csv and the figure written, and a rerun does
nothing but rewrite them, identically."""
import json
import os

import pandas as pd
import pytest

from robustlib import report
from conftest import run_script

ENV = dict(GRID="tiny", EPOCHS="1", EXTRA="--dataset=digits --lr=0.05",
           ATTACK_EXTRA="--n=12 --n_strong=12 --apgd_steps=2 --fab_steps=2 --square_queries=20")


def sweep(root, out, **extra):
    return run_script("studies/study_mnist.sh", dict(ENV, STUDY_OUT=str(out), **extra))


@pytest.mark.slow
def test_tiny_sweep_and_its_rerun(root, tmp_path):
    first = sweep(root, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    points = pd.read_csv(tmp_path / "results/mnist-ssc-protocol/points.csv")
    assert list(points.columns) == report.POINT_COLUMNS
    # the tiny grid: FGSM eps 0.3 x lambda {0, 300}, seeds 1, 2 of lambda 0, PGD and MIM at 0.3
    got = sorted(zip(points.attack, points.eps, points["lambda"], points.seed))
    want = sorted([("fgsm", 0.3, 0, 0), ("fgsm", 0.3, 300, 0), ("fgsm", 0.3, 0, 1), ("fgsm", 0.3, 0, 2),
                   ("pgd", 0.3, 0, 0), ("mim", 0.3, 0, 0)])
    assert got == want
    assert (points.worst_accuracy <= points.paper_accuracy + 1e-9).all()  # the worst case includes the paper's attack
    assert (points.worst_ci_low <= points.worst_accuracy).all() and (points.worst_accuracy <= points.worst_ci_high).all()
    assert (points.n == 12).all() and (points.paper_n == 12).all()
    one = points[(points.attack == "pgd")].iloc[0]
    assert "--adv_train=pgd --adv_eps=0.3 --struct_lambda=0 --seed=0" in one.command
    assert (tmp_path / "Figures/mnist-ssc-protocol.png").stat().st_size > 0
    table = (tmp_path / "results/mnist-ssc-protocol/points.md").read_text()
    assert "| fgsm | 0.3 | 0 | 3 |" in table and "(sd)" in table and "| pgd | 0.3 | 0 | 1 |" in table
    assert first.stdout.count(" trained ") == 6 and first.stdout.count(" attacked ") == 3
    timing = json.loads((tmp_path / "results/mnist-ssc-protocol/timing.json").read_text())
    logs = [pd.read_csv(tmp_path / "runs/mnist-ssc" / d / "log.csv").seconds.sum()
            for d in os.listdir(tmp_path / "runs/mnist-ssc") if os.path.isdir(tmp_path / "runs/mnist-ssc" / d)]
    assert timing["points"] == 6 and timing["grid"] == "tiny" and timing["train_s"] == pytest.approx(sum(logs), abs=0.2)
    assert timing["attack_s"] > 0
    assert "<!-- mnist-ssc-protocol -->" in (tmp_path / "RESULTS.md").read_text()
    second = sweep(root, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert " trained " not in second.stdout  # nothing trained again
    assert pd.read_csv(tmp_path / "results/mnist-ssc-protocol/points.csv").equals(points)
    again = json.loads((tmp_path / "results/mnist-ssc-protocol/timing.json").read_text())
    assert (again["train_s"], again["attack_s"]) == (timing["train_s"], timing["attack_s"])  # the work's record, not the rerun's


def test_bad_grid_is_one_line(root, tmp_path):
    bad = sweep(root, tmp_path, GRID="huge")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: GRID=huge is out of range: allowed cpu, full, tiny"]
