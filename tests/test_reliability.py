"""What the scripts guarantee when a user reruns, resumes, edits or runs out of disk (README:
Reliability): no stale cached number, no mixed runs, no lost row, no traceback, nothing
damaged that was written before a failure."""
import errno
import gzip
import os
import shutil
import subprocess

import pandas as pd
import pytest
import torch

import adv_testing
from robustlib import evaluation  # noqa: E402
from robustlib import checkpoints
import vgg_training
from robustlib import training  # noqa: E402
from robustlib.checkpoints import atomic_write, load_checkpoint
from robustlib.data import DEBIAN_FASHION_MNIST, get_dataset
from robustlib.errors import RunError, run, write_failure

FAST = ["--dataset=digits", "--warmup_epochs=2", "--epochs=2", "--batch_size=128", "--lr=0.003"]
ATTACK = ["--attacks=fgsm", "--eps=0.1", "--n=60", "--n_strong=20"]


def one_line(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2 + 2 epoch digits run (pclc), and its files' bytes."""
    out = tmp_path_factory.mktemp("finished")
    assert vgg_training.main(FAST + [f"--out_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def plain(finished, tmp_path_factory):
    """The finished run's weights as a plain state_dict (no metadata: --model and --dataset)."""
    path = tmp_path_factory.mktemp("plain") / "plain.pth"
    torch.save(load_checkpoint(str(finished / "final.pt"))["model"], path)
    return str(path)


def log_of(out_csv):
    return open(os.path.splitext(str(out_csv))[0] + ".log").read()


def evaluate(*args):
    assert adv_testing.main([*args]) == 0


# ---- 1. the evaluation cache: keyed by everything a result depends on ----------------------------

@pytest.mark.slow
def test_cache_knows_the_dataset(plain, tmp_path):
    out = tmp_path / "r.csv"
    evaluate(plain, "--model=lenet5", "--dataset=digits", *ATTACK, f"--out={out}")
    before = len(log_of(out))
    evaluate(plain, "--model=lenet5", "--dataset=fashion-mnist", *ATTACK, f"--out={out}")
    assert "cached" not in log_of(out)[before:]
    evaluate(plain, "--model=lenet5", "--dataset=fashion-mnist", *ATTACK, f"--out={tmp_path / 'fresh.csv'}")
    assert out.read_text() == (tmp_path / "fresh.csv").read_text()


def write_idx(path, tensor):
    dims = tensor.shape
    header = bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    path.write_bytes(header + tensor.contiguous().numpy().tobytes())


def test_cache_knows_the_images_not_only_their_indices(plain, tmp_path):
    """The same dataset name and indices, another DATA_DIR holding other test images."""
    if not os.path.exists(os.path.join(DEBIAN_FASHION_MNIST, "t10k-labels-idx1-ubyte.gz")):
        pytest.skip("needs Debian's dataset-fashion-mnist (setup.sh installs it)")
    real = get_dataset("fashion-mnist", train=False)
    for name, images in (("a", real.images), ("b", 255 - real.images)):  # b: the negatives
        raw = tmp_path / name / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        write_idx(raw / "t10k-images-idx3-ubyte", images.squeeze(1))
        with gzip.open(os.path.join(DEBIAN_FASHION_MNIST, "t10k-labels-idx1-ubyte.gz")) as f:
            (raw / "t10k-labels-idx1-ubyte").write_bytes(f.read())
    out = tmp_path / "r.csv"
    common = [plain, "--model=lenet5", "--dataset=fashion-mnist", *ATTACK]
    evaluate(*common, f"--data_dir={tmp_path / 'a'}", f"--out={out}")
    first, before = out.read_text(), len(log_of(out))
    evaluate(*common, f"--data_dir={tmp_path / 'b'}", f"--out={out}")
    assert "cached" not in log_of(out)[before:] and out.read_text() != first
    evaluate(*common, f"--data_dir={tmp_path / 'b'}", f"--out={tmp_path / 'fresh.csv'}")
    assert out.read_text() == (tmp_path / "fresh.csv").read_text()


OWN = """
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x):
        return {sign}self.body(x)
"""


def test_cache_knows_the_model_code(tmp_path):
    (tmp_path / "net.py").write_text(OWN.format(sign=""))
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).state_dict(),
               tmp_path / "w.pth")
    weights = {f"body.{k}": v for k, v in torch.load(tmp_path / "w.pth").items()}
    torch.save(weights, tmp_path / "w.pth")
    args = [str(tmp_path / "w.pth"), f"--arch={tmp_path / 'net.py'}:Net", "--dataset=digits", *ATTACK]
    out = tmp_path / "r.csv"
    evaluate(*args, f"--out={out}")
    first, before = out.read_text(), len(log_of(out))
    (tmp_path / "net.py").write_text(OWN.format(sign="-"))  # the forward is edited: other logits
    evaluate(*args, f"--out={out}")
    assert "cached" not in log_of(out)[before:] and out.read_text() != first
    evaluate(*args, f"--out={tmp_path / 'fresh.csv'}")
    assert out.read_text() == (tmp_path / "fresh.csv").read_text()


def test_code_digest_follows_the_project_models(tmp_path, monkeypatch):
    from models import build_model
    copy = tmp_path / "models"
    shutil.copytree(evaluation._MODELS_DIR, copy)
    monkeypatch.setattr(evaluation, "_MODELS_DIR", str(copy))
    model = build_model("lenet5", 1, 28, 10)
    before = evaluation.code_digest(model)
    assert evaluation.code_digest(model) == before
    with open(copy / "lenet.py", "a") as f:
        f.write("\n# an edit\n")
    assert evaluation.code_digest(model) != before


def test_a_cache_entry_that_does_not_fit_is_recomputed(finished, tmp_path):
    ckpt, out = str(finished / "final.pt"), tmp_path / "r.csv"
    args = [ckpt, "--attacks=fgsm,mim", *ATTACK[1:]]  # 4 jobs: clean, fgsm, mim, the large-eps PGD
    evaluate(*args, f"--out={out}")
    first = out.read_text()
    entries = sorted(p for p in (tmp_path / "r.cache").iterdir() if p.suffix == ".pt")  # (.json: indicators)
    torch.save(torch.ones(7), entries[0])                              # a 7-element float tensor
    torch.save(torch.ones(3, dtype=torch.bool), entries[1])            # a bool tensor, wrong length
    entries[2].write_bytes(b"not a pickle")                             # damaged
    torch.save({"accuracy": 1.0}, entries[3])                          # another type
    before = len(log_of(out))
    evaluate(*args, f"--out={out}")
    assert log_of(out)[before:].count("computed") == 4 and out.read_text() == first


def test_tables_sharing_a_cache_reuse_only_the_same_jobs(finished, plain, tmp_path, capsys):
    """--cache: a second table of the same checkpoint (and another model) reuses the first table's
    jobs of that checkpoint only, and writes what a table computed from nothing writes."""
    ckpt, shared = str(finished / "final.pt"), tmp_path / "jobs"
    evaluate(ckpt, *ATTACK, f"--out={tmp_path / 'one.csv'}", f"--cache={shared}")
    assert not (tmp_path / "one.cache").exists() and len([f for f in os.listdir(shared) if f.endswith(".pt")]) == 3
    two = [ckpt, str(finished / "ce_warmup.pt"), *ATTACK]
    evaluate(*two, f"--out={tmp_path / 'two.csv'}", f"--cache={shared}")
    log = log_of(tmp_path / "two.csv")
    assert log.count("cached") == 3 and log.count("computed") == 3
    assert all("final" in line for line in log.splitlines() if "cached" in line)
    evaluate(*two, f"--out={tmp_path / 'alone.csv'}")  # its own cache, nothing to reuse
    assert "cached" not in log_of(tmp_path / "alone.csv")
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "alone.csv").read_text()
    (tmp_path / "file").write_text("x")
    assert run(adv_testing.main, [ckpt, *ATTACK, f"--out={tmp_path / 'r.csv'}", f"--cache={tmp_path / 'file'}"]) == 2
    one_line(capsys, "--cache=", "not a folder")


# ---- 2.-4. training: resume with the same run only, no lost row, no mixed output folder ------------

@pytest.mark.parametrize("flag", ["--lr=0.01", "--weight_decay=0.001", "--loss=ce", "--batch_size=64",
                                  "--seed=1", "--margin=0.8", "--adv_train=fgsm", "--warmup_epochs=3",
                                  "--optimizer=sgd"])
def test_resume_with_a_changed_setting_is_an_error(finished, capsys, flag):
    before = {f: (finished / f).read_bytes() for f in training.RUN_FILES}
    args = [a for a in FAST if not a.startswith(flag.split("=")[0] + "=")]
    assert run(vgg_training.main, args + [flag, f"--out_dir={finished}", "--resume=true"]) == 2
    name, value = flag[2:].split("=")
    one_line(capsys, f"--resume=true with --{name}=", "was made with")
    assert {f: (finished / f).read_bytes() for f in training.RUN_FILES} == before


def test_resume_may_extend_epochs(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    assert vgg_training.main([a for a in FAST if not a.startswith("--epochs=")]
                             + ["--epochs=3", f"--out_dir={out}", "--resume=true"]) == 0
    log = pd.read_csv(out / "log.csv")
    assert log["phase"].tolist() == ["warmup"] * 2 + ["main"] * 3
    assert log.iloc[:4].equals(pd.read_csv(finished / "log.csv"))  # the rows before are kept as they were
    assert load_checkpoint(str(out / "final.pt"))["meta"]["epoch"] == 3


def test_resume_from_a_file_that_is_not_a_resumable_state(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.copy(out / "final.pt", out / "last.pt")
    assert run(vgg_training.main, FAST + [f"--out_dir={out}", "--resume=true"]) == 2
    one_line(capsys, "last.pt is not a resumable state", "optimizer")


def test_resume_on_other_training_data_is_an_error(finished, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    real = training.get_dataset

    def other(name, train, root):
        data = real(name, train, root)
        if train:
            data.images = 255 - data.images
        return data

    monkeypatch.setattr(training, "get_dataset", other)
    assert run(vgg_training.main, FAST + [f"--out_dir={out}", "--resume=true"]) == 2
    one_line(capsys, "other digits training data")


def test_rows_of_a_failed_log_write_come_back_on_resume(finished, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = [0]
    real = training.write_log

    def failing(path, rows):
        calls[0] += 1
        if calls[0] == 4:  # after the last epoch, last.pt already holds its row
            raise write_failure(path, OSError(errno.ENOSPC, "No space left on device"))
        real(path, rows)

    monkeypatch.setattr(training, "write_log", failing)
    assert run(vgg_training.main, FAST + [f"--out_dir={out}"]) == 1
    one_line(capsys, "log.csv: no space left on device")
    assert len(pd.read_csv(out / "log.csv")) == 3
    monkeypatch.undo()
    assert vgg_training.main(FAST + [f"--out_dir={out}", "--resume=true"]) == 0
    same = [c for c in training.LOG_COLUMNS if c != "seconds"]
    assert pd.read_csv(out / "log.csv")[same].equals(pd.read_csv(finished / "log.csv")[same])


def test_a_new_run_over_another_runs_folder(finished, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = (out / "final.pt").read_bytes()
    assert run(vgg_training.main, FAST + ["--loss=ce", f"--out_dir={out}"]) == 2
    one_line(capsys, "holds another run's files (ce_warmup.pt, final.pt, last.pt, log.csv)",
             "--resume=true", "--overwrite=true")
    assert (out / "final.pt").read_bytes() == before
    assert run(vgg_training.main, FAST + [f"--out_dir={out}", "--resume=true", "--overwrite=true"]) == 2
    one_line(capsys, "contradict")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_step", interrupted)
    assert run(vgg_training.main, FAST + ["--loss=ce", f"--out_dir={out}", "--overwrite=true"]) == 130
    assert os.listdir(out) == []  # the old run's files went first: nothing of it is left to mix
    monkeypatch.undo()
    assert vgg_training.main(FAST + ["--loss=ce", f"--out_dir={out}", "--overwrite=true"]) == 0
    assert load_checkpoint(str(out / "final.pt"))["meta"]["settings"]["LOSS"] == "ce"


# ---- 5. output names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["r.md", "r.png", "r.log", "q.cache", "r"])
def test_evaluation_outputs_cannot_clash(finished, tmp_path, capsys, name):
    assert run(adv_testing.main, [str(finished / "final.pt"), *ATTACK, f"--out={tmp_path / name}"]) == 2
    one_line(capsys, "ending in .csv")
    assert os.listdir(tmp_path) == []


# ---- 6. disk full, read-only --------------------------------------------------------------------

def test_write_failures_name_the_file_and_why(tmp_path, monkeypatch):
    path = str(tmp_path / "x.bin")
    atomic_write(path, lambda f: f.write(b"old"))
    for code, words in ((errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system"),
                        (errno.EACCES, "permission denied")):
        def fail(f, code=code):
            f.write(b"half")
            raise OSError(code, os.strerror(code))
        with pytest.raises(RunError, match=f"cannot write {path}: {words}"):
            atomic_write(path, fail)
    assert open(path, "rb").read() == b"old" and os.listdir(tmp_path) == ["x.bin"]

    class ReadOnly:  # what torch.save raises hides the OSError: the place is examined instead
        f_flag, f_bavail, f_frsize = os.ST_RDONLY, 10 ** 6, 4096
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly)
    err = write_failure(path, RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos"))
    assert "read-only file system" in str(err)
    ReadOnly.f_flag, ReadOnly.f_bavail = 0, 0
    assert "no space left on device" in str(write_failure(path, RuntimeError("[enforce fail]")))


@pytest.fixture
def small_disk(tmp_path):
    """mount(size, read_only=False) -> a folder on a fresh tmpfs of that many bytes (needs root)."""
    mounted = []

    def mount(size, read_only=False):
        place = tmp_path / f"disk{len(mounted)}"
        place.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(place)], capture_output=True)
        if res.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()[:80]}): needs root")
        mounted.append(place)
        return place
    yield mount
    for place in mounted:
        subprocess.run(["umount", "-l", str(place)])


def test_training_on_a_full_disk(small_disk, capsys):
    out = small_disk(1_200_000) / "run"   # last.pt is about 760 kB: the second one does not fit
    assert run(vgg_training.main, FAST + [f"--out_dir={out}"]) == 1
    one_line(capsys, f"cannot write {out}/last.pt: no space left on device")
    state = load_checkpoint(str(out / "last.pt"))  # the last good checkpoint is intact
    assert state["meta"]["epoch"] == 1 and len(state["log"]) == 1
    assert sorted(os.listdir(out)) == ["last.pt", "log.csv"]  # no temporary file left


def test_training_when_the_disk_turns_read_only(small_disk, capsys, monkeypatch):
    place = small_disk(50_000_000)
    out = place / "run"
    calls = [0]
    real = training.train_step

    def step(*args):
        calls[0] += 1
        if calls[0] == 12:  # the first batch of epoch 2
            subprocess.run(["mount", "-o", "remount,ro", str(place)], check=True)
        return real(*args)

    monkeypatch.setattr(training, "train_step", step)
    assert run(vgg_training.main, FAST + [f"--out_dir={out}"]) == 1
    one_line(capsys, f"cannot write {out}/last.pt: read-only file system")
    assert load_checkpoint(str(out / "last.pt"))["meta"]["epoch"] == 1


def test_evaluation_on_a_full_disk(finished, small_disk, capsys):
    out = small_disk(60_000) / "r.csv"  # the job cache, CSV and table fit; the PNG does not
    assert run(adv_testing.main, [str(finished / "final.pt"), *ATTACK, f"--out={out}"]) == 1
    one_line(capsys, f"cannot write {str(out)[:-4]}.png: no space left on device")
    assert len(pd.read_csv(out)) > 0 and out.with_suffix(".md").exists()


def test_unwritable_places_are_bad_settings(finished, capsys):
    assert run(vgg_training.main, FAST + ["--out_dir=/proc/forbidden/run"]) == 2
    one_line(capsys, "--out_dir=/proc/forbidden/run is out of range")
    assert run(adv_testing.main, [str(finished / "final.pt"), "--out=/proc/forbidden/r.csv"]) == 2
    one_line(capsys, "--out=/proc/forbidden/r.csv is out of range")


# ---- 7. flags that contradict a checkpoint; 8. non-finite states --------------------------------

@pytest.mark.parametrize("flag", ["--model=vgg11", "--dataset=fashion-mnist"])
def test_flags_that_contradict_the_checkpoint(finished, tmp_path, capsys, flag):
    assert run(adv_testing.main, [str(finished / "final.pt"), flag, f"--out={tmp_path / 'r.csv'}"]) == 2
    one_line(capsys, "lenet5 on digits", f"{flag} contradicts it")
    assert os.listdir(tmp_path) == []


def test_evaluation_refuses_non_finite_weights(finished, tmp_path, capsys):
    state = load_checkpoint(str(finished / "final.pt"))
    first = next(iter(state["model"]))
    state["model"][first] = torch.full_like(state["model"][first], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    assert run(adv_testing.main, [str(tmp_path / "nan.pt"), f"--out={tmp_path / 'r' / 'r.csv'}"]) == 2
    one_line(capsys, "weights are not finite", first)
    assert not (tmp_path / "r").exists()


def test_weights_that_overflow_on_the_last_step(tmp_path, capsys, monkeypatch):
    real = training.make_optimizer
    steps = [0]

    def optimizer(model, s):
        opt = real(model, s)

        def poison(*_):
            steps[0] += 1
            if steps[0] == 44:  # 11 batches an epoch: the very last update of the run
                with torch.no_grad():
                    next(model.parameters()).fill_(float("inf"))
        opt.register_step_post_hook(poison)
        return opt

    monkeypatch.setattr(training, "make_optimizer", optimizer)
    assert run(vgg_training.main, FAST + [f"--out_dir={tmp_path}"]) == 1
    one_line(capsys, "the weights became non-finite in phase main, epoch 2", "last.pt holds the state before")
    log = pd.read_csv(tmp_path / "log.csv")
    numbers = ["train_loss", "train_acc", "test_acc", "prob_gap"]  # struct_loss: empty without ADV_TRAIN
    assert len(log) == 3 and log[numbers].notna().all().all()
    assert not (tmp_path / "final.pt").exists()


def test_finite_weights_whose_outputs_overflow(tmp_path, capsys):
    """One batch an epoch and Adam at a rate of 1e30: the one update leaves the weights finite (about
    1e30) and the training loss finite, but the test logits overflow: exit 1 with one line, never
    "checkpoints written" over a log.csv holding nan."""
    argv = ["--dataset=digits", "--warmup_epochs=1", "--epochs=0", "--batch_size=100000", "--optimizer=adam",
            "--lr=1e30", "--collapse_check=0", f"--out_dir={tmp_path}"]
    assert run(vgg_training.main, argv) == 1
    one_line(capsys, "outputs on the test set became non-finite after phase warmup, epoch 1",
             "no checkpoint of this run was written yet")
    assert not (tmp_path / "final.pt").exists() and not (tmp_path / "ce_warmup.pt").exists()


def test_non_finite_logits_in_the_first_epoch(tmp_path, capsys, monkeypatch):
    real, calls = training.train_step, [0]

    def step(*args):
        calls[0] += 1
        loss, logits, structure = real(*args)
        return loss, (logits * float("inf") if calls[0] == 3 else logits), structure

    monkeypatch.setattr(training, "train_step", step)
    assert run(vgg_training.main, FAST + [f"--out_dir={tmp_path}"]) == 1
    one_line(capsys, "the logits became non-finite in phase warmup, epoch 1, batch 3",
             "no checkpoint of this run was written yet")
    assert not (tmp_path / "last.pt").exists()


def test_checkpoint_write_keeps_last_good_on_failure(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    path = str(tmp_path / "c.pt")
    checkpoints.save_checkpoint(path, model, dict(model="lenet5"))
    good = open(path, "rb").read()

    def full(obj, f):
        f.write(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoints.torch, "save", full)
    monkeypatch.setattr(os, "statvfs", lambda p: type("S", (), dict(f_flag=0, f_bavail=0, f_frsize=4096)))
    with pytest.raises(RunError, match="c.pt: no space left on device"):
        checkpoints.save_checkpoint(path, model, dict(model="lenet5"))
    assert open(path, "rb").read() == good
