"""reproduce.sh end to end on digits (the stand-in for MNIST: its three runs, one epoch a phase, small
attack budgets): every run trained and attacked, its figures and its RESULTS.md section written, and
a rerun trains nothing again."""

import pandas as pd
import pytest

from conftest import run_script

ENV = dict(DATASETS="digits", EXTRA="--warmup_epochs=1 --epochs=1 --lr=0.01",
           ATTACK_EXTRA="--n=16 --n_strong=8 --apgd_steps=2 --fab_steps=2 --square_queries=10 --spsa_iters=2 --eps=0.1,0.3",
           FIGURE_EXTRA="--n_motivation=40 --n_tsne=40 --fgsm_eps=0.1 --mim_eps=0.1")

def reproduce(root, out, **extra):
    return run_script("studies/reproduce.sh", dict(ENV, STUDY_OUT=str(out), **extra))

@pytest.mark.slow
def test_digits_reproduction_and_its_rerun(root, tmp_path):
    first = reproduce(root, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    table = pd.read_csv(tmp_path / "results/digits-lenet5/robustness.csv")
    assert sorted(table.checkpoint.unique()) == ["adv/final", "ce/final", "pclc/final"]
    assert set(table[table.attack == "worst"].eps) == {0.1, 0.3}
    for name in ("robustness", "motivation", "effect", "tsne"):
        assert (tmp_path / f"Figures/digits-lenet5-{name}.png").stat().st_size > 0
    results = (tmp_path / "RESULTS.md").read_text()
    assert results.startswith("# Results\n\n<!-- reproduce-digits -->\n## LeNet-5 on digits")
    assert "| model | clean (%) | worst eps 0.1 (%) | worst eps 0.3 (%) |" in results
    adv_log = pd.read_csv(tmp_path / "runs/repro/digits/adv/log.csv")
    assert len(adv_log) == 2 and adv_log.train_pgd_acc.notna().all()  # both phases adversarially trained
    assert "study reproduce (all) finished" in first.stdout and first.stdout.count(" trained ") == 3
    for name in ("ce", "pclc", "adv"):  # each run's output beside it, its command and record kept
        assert "phase warmup" in (tmp_path / f"runs/repro/digits/{name}.train.log").read_text()
        command = (tmp_path / f"runs/repro/digits/{name}/command.txt").read_text()
        assert command.startswith("python vgg_training.py --dataset=digits --loss=")
        assert (tmp_path / f"results/digits-lenet5/training/{name}.command.txt").read_text() == command
    second = reproduce(root, tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert " trained " not in second.stdout  # nothing trained again
    assert pd.read_csv(tmp_path / "results/digits-lenet5/robustness.csv").equals(table)
    written = (tmp_path / "RESULTS.md").read_text()
    again = reproduce(root, tmp_path, STAGE="report")  # the write-up alone, from results/: the same bytes
    assert again.returncode == 0 and (tmp_path / "RESULTS.md").read_text() == written
    assert " attacked " not in again.stdout

def test_unknown_dataset_is_one_line(root, tmp_path):
    bad = reproduce(root, tmp_path, DATASETS="cifar10")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: DATASETS=cifar10 is out of range: allowed fashion-mnist, mnist (digits for tests)"]


def test_a_former_output_setting_is_one_line(root, tmp_path):
    bad = run_script("studies/reproduce.sh", dict(ENV, REPRO_OUT=str(tmp_path)))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: REPRO_OUT is now STUDY_OUT (one name for every study's output folder)"]
