"""CE against PC + LC end to end on digits (one epoch a phase, small attack budgets): the two seeds'
runs and tables, the write-up through the findings rows; then the L2 study on the same runs, which
trains nothing; STAGE=report rewrites both sections byte for byte from results/ alone."""
import pandas as pd
import pytest

from conftest import run_script

ENV = dict(DATASETS="digits", EXTRA="--warmup_epochs=1 --epochs=1 --lr=0.05",
           ATTACK_EXTRA="--attacks=released,apgd-pm,noise --apgd_steps=2")


@pytest.mark.slow
def test_ce_vs_pclc_then_l2_on_digits(tmp_path):
    env = dict(ENV, STUDY_OUT=str(tmp_path))
    done = run_script("studies/ce_vs_pclc.sh", dict(env, SEEDS="0 1", N="16"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(" trained ") == 4
    res = tmp_path / "results/ce-vs-pclc/digits"
    for seed in (0, 1):
        t = pd.read_csv(res / f"seed-{seed}.csv")
        assert set(t.checkpoint) == {"ce/final", "pclc/final"} and set(t.n[t.attack == "worst"]) == {16}
        assert set(t.eps[t.attack == "worst"]) == {0.1, 0.3}
    summary = (res / "summary.md").read_text()
    assert "| [PC + LC vs CE (+ adaptive suite), digits](docs/reproduction.md) | 0.1 |" in summary
    assert "\n|  | 0.3 | " in summary and summary.count("| 16, 2 |") == 2
    # each suite alone, mean ± sd over the seeds (neither AutoAttack nor the whole adaptive suite ran: empty)
    t0, t1 = (pd.read_csv(res / f"seed-{seed}.csv") for seed in (0, 1))
    pick = lambda t: 100 * t[(t.checkpoint == "pclc/final") & (t.attack == "worst-released") & (t.eps == 0.3)].accuracy.iloc[0]  # noqa: E731
    a, b = pick(t0), pick(t1)
    assert f"| PC + LC | 0.3 | {(a + b) / 2:.1f} ± {abs(a - b) / 2 ** 0.5:.1f} | - | - | " in summary
    l2 = run_script("studies/ce_vs_pclc_l2.sh", dict(env, N="12"))
    assert l2.returncode == 0, l2.stderr[-2000:]
    assert " trained " not in l2.stdout  # seed 0's runs are ce-vs-pclc's
    t = pd.read_csv(tmp_path / "results/ce-vs-pclc-l2/digits/seed-0.csv")
    assert set(t.eps[t.attack == "worst"]) == {1.0, 2.0} and set(t.n[t.attack == "worst"]) == {12}
    assert "Threat model: L2" in (tmp_path / "results/ce-vs-pclc-l2/digits/seed-0.md").read_text()
    results = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- ce-vs-pclc-digits -->" in results and "<!-- ce-vs-pclc-l2-digits -->" in results
    assert "| [PC + LC vs CE (+ adaptive suite), digits, L2](docs/reproduction.md) | 1 |" in results
    assert "\n|  | 2 | " in results
    for script, extra in (("studies/ce_vs_pclc.sh", dict(SEEDS="0 1", N="16")), ("studies/ce_vs_pclc_l2.sh", dict(N="12"))):
        again = run_script(script, dict(env, STAGE="report", **extra))
        assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "RESULTS.md").read_text() == results
