"""bench.py --quick runs and writes every named figure (no timing is asserted here)."""
import json
import os
import subprocess
import sys

import pytest

FIGURES = ["loss_cost_k10", "loss_cost_k100", "loss_cost_k1000", "train_step", "pipeline_vs_torchvision",
           "pipeline_vs_compute", "epoch_vs_plain", "choice_train_channels_last", "choice_attack_channels_last",
           "choice_attack_threads", "choice_attack_batch", "suite_vs_bare", "adaptive_vs_autoattack", "attack_step_vs_sgemm_smallcnn", "attack_step_vs_sgemm_lenet5", "main_job_minutes",
           "reproduce_minutes", "memory_train_rss_mib", "budget_standard_vs_quick", "memory_gpu_mib", "gpu_bf16_channels_last",
           "adv_epoch_fgsm-rs", "adv_epoch_pgd", "adv_epoch_trades", "adv_epoch_mart", "cpu_bf16_lenet5",
           "cpu_bf16_smallcnn", "sweep_minutes", "sweep_points_per_cpu_hour"]
NOT_IN_QUICK = {"memory_gpu_mib", "gpu_bf16_channels_last",  # these need a GPU
                "reproduce_minutes",  # a quarter of an hour: the full run only
                "sweep_minutes", "sweep_points_per_cpu_hour"}  # read from study_mnist.sh's record, if any


@pytest.mark.slow
def test_bench_quick_writes_every_figure(tmp_path, root):
    if not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"):
        pytest.skip("apt-get install dataset-fashion-mnist to run the benchmark")
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "tools/bench.py", "--quick", f"--out={out}"], cwd=root,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    expected = set(FIGURES) - ({"choice_attack_threads"} if os.cpu_count() == 1 else set())
    assert set(data["figures"]) == expected
    for name, fig in data["figures"].items():
        assert {"value", "target", "met", "what"} <= set(fig), name
        if name not in NOT_IN_QUICK:
            assert fig["value"] > 0, name
        if fig["target"] is not None and fig["value"] is not None:  # the verdict follows the target
            kind = fig.get("target_is", "max")
            assert fig["met"] == (fig["value"] <= fig["target"] if kind == "max" else fig["value"] >= fig["target"])
    assert data["machine"]["quick"] is True
    # the adversarial-training cost is measured on the model each preset trains
    assert data["figures"]["adv_epoch_fgsm-rs"]["what"].startswith("wong-mnist MNIST, fgsm-rs")
    assert data["figures"]["adv_epoch_trades"]["what"].startswith("smallcnn MNIST, trades")
    for name in expected:
        assert name in res.stdout
    costs = data["figures"]["adaptive_vs_autoattack"]["ms_per_image"]  # each attack of both suites, alone
    assert set(costs) == {"apgd-ce", "apgd-t", "fab-t", "square", "apgd-pm", "apgd-dlr", "feature-pull"}
