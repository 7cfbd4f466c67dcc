"""Behaviour kept through refactoring: a small training run and a small evaluation of it give the
numbers recorded in tests/golden/*.csv (regenerate with `python tests/test_golden.py` only when a
change of behaviour is intended, and say so in the commit).

Both run in float64, which makes them the same on every x86-64 CPU seen: AVX2 (AMD EPYC) and
AVX-512 machines give bit-identical float64 results here (checked on one Intel machine with
ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2, which is how an AVX2
machine computes). In float32 they rounded differently, and PGD's signed steps turned that into
other images (18 of 24 accuracies differed on an AMD EPYC). FAB-T is left out of the evaluation:
torchattacks' FAB casts its inputs to float32."""
import os
import sys

import pandas as pd
import torch
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import adv_testing  # noqa: E402
import vgg_training  # noqa: E402

TRAIN = ["--dataset=digits", "--warmup_epochs=1", "--epochs=1", "--lr=0.005", "--adv_train=pgd",
         "--adv_eps=0.1", "--adv_steps=2", "--struct_lambda=10", "--alpha=0.5", "--beta=1.5",
         "--collapse_check=64"]
TRADES = ["--dataset=digits", "--warmup_epochs=0", "--epochs=1", "--lr=0.005", "--loss=ce",
          "--adv_train=trades", "--adv_eps=0.1", "--adv_steps=2", "--beta=3", "--collapse_check=0"]
ATTACK = ["--attacks=fgsm,mim,pgd,spsa,apgd-ce,apgd-t,square", "--eps=0.05,0.15", "--n=60",
          "--n_strong=30", "--apgd_steps=4", "--fab_steps=3", "--square_queries=40", "--large_eps=0.4"]
LOG_NUMBERS = ["train_loss", "train_acc", "test_acc", "prob_gap", "lr", "struct_loss", "train_pgd_acc"]


def produce(tmp):
    """The training logs of both runs and the evaluation table of the first, in float64 on 2 threads:
    float32 kernels round differently on each instruction set (AVX2, AVX-512, AMX), and PGD's signed
    steps turn that rounding into other images; in float64 the differences stay far below the
    tolerances below."""
    frames, threads, dtype = {}, torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float64)
    try:
        for name, argv in (("train", TRAIN), ("trades", TRADES)):
            assert vgg_training.main(argv + [f"--out_dir={tmp}/{name}"]) == 0
            frames[name] = pd.read_csv(f"{tmp}/{name}/log.csv")[["phase", "epoch"] + LOG_NUMBERS]
        assert adv_testing.main([f"{tmp}/train/final.pt"] + ATTACK + [f"--out={tmp}/eval.csv"]) == 0
        frames["eval"] = pd.read_csv(f"{tmp}/eval.csv")
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
    return frames


def golden(name):
    return os.path.join(HERE, "golden", f"{name}.csv")


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    return produce(tmp_path_factory.mktemp("golden"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train", "trades"])
def test_training_log_unchanged(produced, name):
    want, got = pd.read_csv(golden(name)), produced[name]
    assert list(got.phase) == list(want.phase) and list(got.epoch) == list(want.epoch)
    for column in LOG_NUMBERS:  # float64: equal up to log.csv's 6 decimals (one unit either way)
        pd.testing.assert_series_equal(got[column].astype(float), want[column].astype(float),
                                       check_exact=False, rtol=0, atol=2e-6, check_names=False)


def test_evaluation_unchanged(produced):
    want, got = pd.read_csv(golden("eval")), produced["eval"]
    assert list(got.columns) == list(want.columns)
    assert got[["checkpoint", "attack", "n", "budget"]].equals(want[["checkpoint", "attack", "n", "budget"]])
    for column in ("eps", "accuracy", "ci_low", "ci_high"):
        pd.testing.assert_series_equal(got[column], want[column], check_exact=False, atol=1e-6,
                                       check_names=False)


if __name__ == "__main__":  # regenerate the golden files (an intended change of behaviour)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in produce(tmp).items():
            frame.to_csv(golden(name), index=False)
            print("written", golden(name))
