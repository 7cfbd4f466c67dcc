"""bench.py --quick runs and writes every named figure (no timing is asserted here)."""
import json
import os
import subprocess
import sys

import pytest

FIGURES = ["loss_cost_k10", "loss_cost_k100", "loss_cost_k200", "train_step", "pipeline_vs_torchvision",
           "pipeline_vs_compute", "attack_throughput", "main_job_minutes", "memory_train_rss_mib", "memory_gpu_mib",
           "gpu_bf16_channels_last"]


def test_bench_quick_writes_every_figure(tmp_path, root):
    if not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"):
        pytest.skip("apt-get install dataset-fashion-mnist to run the benchmark")
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "bench.py", "--quick", f"--out={out}"], cwd=root,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data["figures"]) == set(FIGURES)
    for name, fig in data["figures"].items():
        assert {"value", "target", "met", "what"} <= set(fig), name
        if name not in ("memory_gpu_mib", "gpu_bf16_channels_last"):  # these need a GPU
            assert fig["value"] > 0, name
    assert data["machine"]["quick"] is True
    for name in FIGURES:
        assert name in res.stdout
