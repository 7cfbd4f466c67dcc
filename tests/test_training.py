"""vgg_training.py end to end on `digits`: phases, outputs, resume, atomic saves, bad files, DDP."""
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from robustlib import checkpoints
import vgg_training
from robustlib import training  # noqa: E402
from robustlib.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from robustlib.cli import parse_settings
from robustlib.errors import RunError, UserError, run

FAST = ["--dataset=digits", "--warmup_epochs=2", "--epochs=2", "--batch_size=128", "--lr=0.003"]


def train(out, *extra):
    assert vgg_training.main(FAST + [f"--out_dir={out}", *extra]) == 0
    return out


def weights(path):
    return load_checkpoint(str(path))["model"]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def pclc_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("pclc"))


def test_writes_four_files_and_log(pclc_run):
    for name in ("ce_warmup.pt", "final.pt", "last.pt", "log.csv"):
        assert (pclc_run / name).stat().st_size > 0
    import pandas as pd
    log = pd.read_csv(pclc_run / "log.csv")
    assert tuple(log.columns) == training.LOG_COLUMNS
    assert log["phase"].tolist() == ["warmup"] * 2 + ["main"] * 2
    assert log["epoch"].tolist() == [1, 2, 1, 2]
    # the last row's numbers are the final weights' on the test set, recomputed here
    from robustlib.data import get_dataset
    from robustlib.metrics import evaluate
    acc, gap = evaluate(model_from_checkpoint(load_checkpoint(str(pclc_run / "final.pt"))), get_dataset("digits", False), "cpu")
    assert log["test_acc"].iloc[-1] == pytest.approx(acc, abs=1e-6) and log["prob_gap"].iloc[-1] == pytest.approx(gap, abs=1e-6)
    meta = load_checkpoint(str(pclc_run / "final.pt"))["meta"]
    assert (meta["dataset"], meta["model"], meta["num_classes"], meta["in_channels"],
            meta["image_size"], meta["phase"], meta["epoch"]) == ("digits", "lenet5", 10, 1, 28, "main", 2)
    assert meta["settings"]["LOSS"] == "pclc" and meta["settings"]["MARGIN"] == 0.995
    model = model_from_checkpoint(load_checkpoint(str(pclc_run / "final.pt")))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert log["test_acc"].iloc[-1] > 0.3  # it learns something in 4 short epochs


def test_second_phase_starts_from_warmup_weights(tmp_path, monkeypatch):
    seen = {}
    original = training.train_step

    def spy(net, batch, criterion, *rest):
        if not isinstance(criterion, torch.nn.CrossEntropyLoss) and "first" not in seen:
            seen["first"] = {k: v.clone() for k, v in net.model.state_dict().items()}
        return original(net, batch, criterion, *rest)

    monkeypatch.setattr(training, "train_step", spy)
    train(tmp_path)
    assert same(seen["first"], weights(tmp_path / "ce_warmup.pt"))
    assert not same(weights(tmp_path / "ce_warmup.pt"), weights(tmp_path / "final.pt"))


def test_ce_and_pclc_differ_only_in_second_phase(tmp_path, pclc_run):
    ce = train(tmp_path, "--loss=ce")
    assert same(weights(ce / "ce_warmup.pt"), weights(pclc_run / "ce_warmup.pt"))
    assert not same(weights(ce / "final.pt"), weights(pclc_run / "final.pt"))
    import pandas as pd
    a, b = pd.read_csv(ce / "log.csv"), pd.read_csv(pclc_run / "log.csv")
    cols = ["train_loss", "train_acc", "test_acc", "prob_gap", "lr"]
    assert a[cols].iloc[:2].equals(b[cols].iloc[:2])
    assert not a[cols].iloc[2:].equals(b[cols].iloc[2:])


KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
import vgg_training
from robustlib import training
calls = [0]
original = training.train_step
def step(*args):
    calls[0] += 1
    if calls[0] == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args)
training.train_step = step
sys.exit(vgg_training.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [12, 17, 28, 41])
def test_resume_after_sigkill_is_bit_identical(tmp_path, root, pclc_run, kill_at):
    """11 batches an epoch: call 12 is the first batch of epoch 2 (stopped right after epoch 1),
    17 mid warm-up epoch 2, 28 mid main epoch 1, 41 mid main epoch 2."""
    out = tmp_path / "run"
    args = FAST + [f"--out_dir={out}"]
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=root, kill_at=kill_at))
    killed = subprocess.run([sys.executable, str(script), *args], cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "final.pt").exists()
    resumed = subprocess.run([sys.executable, "vgg_training.py", *args, "--resume=true"], cwd=root,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert same(weights(out / "final.pt"), weights(pclc_run / "final.pt"))
    assert same(weights(out / "ce_warmup.pt"), weights(pclc_run / "ce_warmup.pt"))
    import pandas as pd
    log = pd.read_csv(out / "log.csv")
    assert log["phase"].tolist() == ["warmup"] * 2 + ["main"] * 2
    assert log["test_acc"].equals(pd.read_csv(pclc_run / "log.csv")["test_acc"])


def test_resume_with_nothing_is_an_error(tmp_path, capsys):
    assert run(vgg_training.main, FAST + [f"--out_dir={tmp_path}", "--resume=true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nothing to resume" in err and err.count("\n") == 1


def test_resume_other_model_is_an_error(tmp_path, capsys, pclc_run):
    assert run(vgg_training.main, FAST + [f"--out_dir={pclc_run}", "--resume=true", "--model=cnn3"]) == 2
    assert "made for lenet5 on digits" in capsys.readouterr().err


def test_atomic_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    path = str(tmp_path / "ck.pt")
    meta = dict(model="lenet5")
    save_checkpoint(path, model, meta)
    before = weights(path)

    def broken(obj, f):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken)
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises(RunError, match=r"cannot write .*ck\.pt: .*files written before it are intact"):
        save_checkpoint(path, model, meta)
    monkeypatch.undo()
    assert same(weights(path), before)
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind


class Evil:
    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_bad_checkpoints_are_refused(tmp_path, pclc_run):
    good = (pclc_run / "final.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    evil = Evil()
    evil.marker = str(tmp_path / "code-ran")
    with open(tmp_path / "evil.pt", "wb") as f:
        torch.save({"format": checkpoints.FORMAT, "payload": evil}, f)
    (tmp_path / "text.pt").write_text("hello")
    cases = {"missing.pt": "no such", "truncated.pt": "truncated", "foreign.pt": "not a checkpoint",
             "evil.pt": "refused", "text.pt": "truncated or not"}
    for name, words in cases.items():
        with pytest.raises(UserError) as err:
            load_checkpoint(str(tmp_path / name))
        assert words in str(err.value) and name in str(err.value) and "\n" not in str(err.value)
    assert not os.path.exists(evil.marker)
    other = load_checkpoint(str(pclc_run / "final.pt"))
    other["meta"] = dict(other["meta"], model="cnn3")
    with pytest.raises(UserError, match="do not fit"):
        model_from_checkpoint(other, "x.pt")


def test_non_finite_loss_stops_with_epoch_and_batch(tmp_path, monkeypatch):
    calls = [0]
    original = training.train_step

    def poisoned(*args):
        calls[0] += 1
        loss, logits, s = original(*args)
        return (loss * float("nan") if calls[0] == 15 else loss), logits, s

    monkeypatch.setattr(training, "train_step", poisoned)
    with pytest.raises(RunError, match=r"nan in phase warmup, epoch 2, batch 4; .*last.pt holds the state"):
        train(tmp_path)
    assert load_checkpoint(str(tmp_path / "last.pt"))["meta"]["epoch"] == 1


def test_adversarial_training_with_structure_term(tmp_path):
    out = train(tmp_path, "--warmup_epochs=1", "--epochs=1", "--adv_train=pgd", "--struct_lambda=100",
                "--adv_steps=2")
    import pandas as pd
    log = pd.read_csv(out / "log.csv")
    assert (log["struct_loss"] > 0).all() and log["struct_loss"].notna().all()
    for name in ("ce_warmup.pt", "final.pt", "last.pt"):
        assert (out / name).exists()
    assert load_checkpoint(str(out / "final.pt"))["meta"]["settings"]["STRUCT_LAMBDA"] == 100.0


@pytest.mark.slow
def test_struct_in_warmup_false_keeps_the_term_out_of_the_warmup_only(tmp_path):
    """--struct_in_warmup=false: the warm-up is plain adversarial CE (the same weights as lambda 0),
    the main phase has the term (other weights than lambda 0); true (the default): both phases."""
    common = ["--warmup_epochs=1", "--epochs=1", "--adv_train=pgd", "--adv_steps=2", "--struct=rcc"]
    plain = train(tmp_path / "plain", *common, "--struct_lambda=0")
    late = train(tmp_path / "late", *common, "--struct_lambda=100", "--struct_in_warmup=false")
    both = train(tmp_path / "both", *common, "--struct_lambda=100")
    assert same(weights(late / "ce_warmup.pt"), weights(plain / "ce_warmup.pt"))
    assert not same(weights(late / "final.pt"), weights(plain / "final.pt"))
    assert not same(weights(both / "ce_warmup.pt"), weights(plain / "ce_warmup.pt"))


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, root):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "vgg_training.py", *FAST, "--warmup_epochs=1", "--epochs=1", "--device=cpu", f"--out_dir={out}"]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    # the head of stderr holds the first rank's failure; the tail only torchrun's summary
    assert res.returncode == 0, res.stderr[:3000] + "\n...\n" + res.stderr[-1500:]
    assert "all 2 ranks hold identical weights" in res.stdout
    assert res.stdout.count("phase main") == 1  # only rank 0 prints
    for name in ("ce_warmup.pt", "final.pt", "last.pt", "log.csv"):
        assert (out / name).exists()


def test_cli_overrides_and_errors(capsys):
    defaults = {"EPOCHS": 3, "LR": 0.1, "LOSS": "pclc", "RESUME": False, "EPS": [0.1, 0.2]}
    s, rest = parse_settings(defaults, ["--epochs=5", "--lr=8/255", "--resume=true", "--eps=1/255,0.5",
                                        "ckpt.pt"])
    assert s == {"EPOCHS": 5, "LR": 8 / 255, "LOSS": "pclc", "RESUME": True, "EPS": [1 / 255, 0.5]}
    assert rest == ["ckpt.pt"]
    with pytest.raises(UserError, match="unknown setting --epoch; settings: epochs, lr"):
        parse_settings(defaults, ["--epoch=3"])
    with pytest.raises(UserError, match="--epochs=three: expected a int"):
        parse_settings(defaults, ["--epochs=three"])
    with pytest.raises(UserError, match="--resume=maybe"):
        parse_settings(defaults, ["--resume=maybe"])
    with pytest.raises(UserError, match="--preset=x is out of range: allowed one of a"):
        parse_settings(defaults, ["--preset=x"], {"a": {}})
    s, _ = parse_settings(defaults, ["--epochs=7", "--preset=a"], {"a": {"EPOCHS": 9, "LR": 0.5}})
    assert s["EPOCHS"] == 7 and s["LR"] == 0.5  # a preset first, explicit overrides win
    assert run(vgg_training.main, ["--loss=focal"]) == 2
    assert run(vgg_training.main, ["--modle=vgg13"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: --loss=focal is out of range: allowed one of pclc, pc, ce"
    assert err[1].startswith("error: unknown setting --modle; settings: dataset, model")


def test_paper_preset_settings():
    s, _ = parse_settings(vgg_training.settings_of(vars(vgg_training)), ["--preset=paper-tiny-imagenet"],
                          vgg_training.PRESETS)
    assert (s["DATASET"], s["MODEL"], s["LR"], s["MILESTONES"], s["GAMMA"], s["BATCH_SIZE"],
            s["WARMUP_EPOCHS"], s["EPOCHS"], s["MARGIN"], s["LC_WEIGHT"]) == \
        ("tiny-imagenet", "vgg13", 0.01, [50, 100], 0.2, 256, 150, 150, 0.995, 0.05)


def test_released_presets(tmp_path):
    settings = vgg_training.settings_of(vars(vgg_training))
    ssc, _ = parse_settings(settings, ["--preset=ssc-released"], vgg_training.PRESETS)
    assert (ssc["MODEL"], ssc["OPTIMIZER"], ssc["LR"], ssc["MOMENTUM"], ssc["WEIGHT_DECAY"],
            ssc["BATCH_SIZE"], ssc["EPOCHS"], ssc["MILESTONES"], ssc["ADV_TRAIN"], ssc["ADV_EPS"],
            ssc["ALPHA"], ssc["BETA"], ssc["STRUCT"], ssc["STRUCT_LAMBDA"], ssc["STRUCT_METRIC"],
            ssc["STRUCT_ON"], ssc["SEED"]) == \
        ("lenet-classic", "sgd", 0.01, 0.9, 1e-3, 128, 20, [], "fgsm", 0.03, 0.0, 1.0, "ssc", 300.0,
         "euclidean", "logits", 0)
    rcc, _ = parse_settings(settings, ["--preset=rcc-released"], vgg_training.PRESETS)
    assert (rcc["ALPHA"], rcc["BETA"], rcc["STRUCT"], rcc["STRUCT_LAMBDA"], rcc["STRUCT_ON"],
            rcc["WEIGHT_DECAY"], rcc["ADV_EPS"]) == (0.5, 0.5, "rcc", 15.0, "embedding", 1e-4, 0.01)
    lams = sorted(float(k.rsplit("-", 1)[1]) for k in vgg_training.PRESETS if k.startswith("ssc-lambda-"))
    assert lams == [0, 10, 50, 100, 300, 500, 1000]


@pytest.mark.parametrize("preset", [
    pytest.param(p, marks=pytest.mark.slow) if p in ("trades-mnist", "mart-mnist", "pgd-at-mnist", "pgd-at-wong-mnist") else p
    for p in vgg_training.PRESETS if p.startswith(("ssc-", "rcc-")) or p.endswith("-mnist")])
def test_each_preset_one_epoch_on_digits(tmp_path, preset):
    out = tmp_path / preset
    assert vgg_training.main([f"--preset={preset}", "--dataset=digits", "--epochs=1", "--warmup_epochs=0",
                              f"--out_dir={out}"]) == 0
    import pandas as pd
    log = pd.read_csv(out / "log.csv")
    assert len(log) == 1 and log["struct_loss"].map(math.isfinite).all()  # the structural term was logged
    assert log["train_pgd_acc"].between(0, log["train_acc"].iloc[0] + 0.2).all()  # the collapse probe ran
    assert load_checkpoint(str(out / "final.pt"))["meta"]["settings"]["PRESET"] == preset


@pytest.mark.parametrize("extra", [["--adv_train=mim", "--adv_steps=2", "--struct=rcc", "--struct_metric=cosine"],
                                   ["--adv_train=pgd", "--adv_steps=2", "--struct_metric=manhattan",
                                    "--struct_on=logits", "--optimizer=sgd"]])
def test_structure_options_train(tmp_path, extra):
    out = train(tmp_path, "--warmup_epochs=0", "--epochs=1", "--struct_lambda=10", *extra)
    import pandas as pd
    assert pd.read_csv(out / "log.csv")["struct_loss"].notna().all()


@pytest.mark.parametrize("best, now, fires", [
    (0.689, 0.15, True),    # fell below 30 % of a real best: catastrophic overfitting
    (0.689, 0.291, False),  # a swing, not a collapse (FGSM-RS on MNIST, epoch 6)
    (0.5, 0.149, True), (0.5, 0.15, False),  # the 30 % boundary
    (0.014, 0.004, True),  # overfit from the first epoch: a small best counts (FGSM-RS seed 2)
    (0.0, 0.0, False),
    (None, 0.0, False)])    # the first epoch has no best
def test_collapse_rule(best, now, fires):
    assert training.collapsed(best, now) is fires


def test_collapse_warning_printed_by_epoch_row(monkeypatch):
    """epoch_row asks collapsed() with the best of the earlier rows and prints the one-line warning."""
    said = []
    monkeypatch.setattr(training, "evaluate", lambda *a: (0.9, 0.5))
    monkeypatch.setattr(training, "pgd_accuracy", lambda *a: 0.1)
    r = training.Run(model=None, test_set=None, device="cpu", attack=object(), probe=(None, torch.zeros(64)),
                         s=dict(ADV_EPS=0.3, SEED=0), say=said.append)
    sums = torch.tensor([1.0, 1.0, 2.0, 0.0], dtype=torch.float64)
    earlier = [dict(train_pgd_acc=0.2), dict(train_pgd_acc=0.6), dict(train_pgd_acc="")]
    row = training.epoch_row(r, "main", 3, 10, sums, 0.01, 1.0, earlier)
    assert row["train_pgd_acc"] == 0.1 and said[0] == (
        "WARNING PGD-10 accuracy on 64 training images fell to 10.0% (best 60.0%): catastrophic "
        "overfitting; stop, or shrink ADV_STEP_SIZE")
    said.clear()
    training.epoch_row(r, "main", 3, 10, sums, 0.01, 1.0, [dict(train_pgd_acc=0.3)])  # 0.1 > 0.3 * 0.3
    assert len(said) == 1 and not said[0].startswith("WARNING")
