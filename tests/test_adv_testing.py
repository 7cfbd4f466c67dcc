"""adv_testing.py on a LeNet-5 trained inside the test on `digits`."""
import os

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import adv_testing
import vgg_training
from checkpoints import load_checkpoint, model_from_checkpoint
from cli import run
from data import get_dataset

SETTINGS = adv_testing.settings_of(vars(adv_testing))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("lenet")
    assert vgg_training.main(["--dataset=digits", "--warmup_epochs=3", "--epochs=0", "--lr=0.005",
                              f"--out_dir={out}"]) == 0
    return str(out / "final.pt")


@pytest.fixture(scope="module")
def model(ckpt):
    return model_from_checkpoint(load_checkpoint(ckpt)).eval()


@pytest.fixture(scope="module")
def test_set():
    return get_dataset("digits", False)


def test_fgsm_matches_hand_written(ckpt, model, test_set, tmp_path):
    out = tmp_path / "r.csv"
    assert adv_testing.main([ckpt, "--attacks=fgsm", "--eps=0.1", f"--out={out}"]) == 0
    table = pd.read_csv(out)
    script_acc = table[(table.attack == "fgsm") & (table.eps == 0.1)]["accuracy"].item()
    x, y = test_set.batch(torch.arange(len(test_set)))
    x = x.clone().requires_grad_()
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    adv = (x + 0.1 * grad.sign()).clamp(0, 1)
    mine = (model(adv).argmax(1) == y).float().mean().item()
    assert abs(script_acc - mine) * len(test_set) <= 1.0
    assert list(table.columns) == ["checkpoint", "attack", "eps", "accuracy", "n"]
    assert set(table.attack) == {"clean", "fgsm", "worst", "pgd-large-eps"}
    assert (table.n == 360).all()
    assert (tmp_path / "r.md").read_text().count("| fgsm | 0.1 |") == 1
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_eps_zero_is_clean_and_worst_is_per_sample_minimum(model, test_set):
    index = torch.arange(len(test_set))
    correct = adv_testing.run_attacks(model, test_set, index, ["fgsm", "mim", "pgd"], [0.0, 0.1],
                                      SETTINGS, "cpu")
    for name in ("fgsm", "mim", "pgd"):
        assert torch.equal(correct[(name, 0.0)], correct[("clean", 0.0)])
    worst = adv_testing.worst_case(correct, [0.1])[("worst", 0.1)]
    for name in ("clean", "fgsm", "mim", "pgd"):
        key = (name, 0.0 if name == "clean" else 0.1)
        assert not (worst & ~correct[key]).any()  # robust in worst => robust under each attack
    assert worst.float().mean() <= min(correct[(a, 0.1)].float().mean() for a in ("fgsm", "mim", "pgd"))
    assert all(p.grad is None for p in model.parameters())  # attacks leave gradients untouched
    assert not model.training


class Scaled(torch.nn.Module):
    """Logits times 1e4: softmax saturates, the CE gradient vanishes (masked gradients)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e4


def test_masking_warning_fires_only_on_masked_model(model, test_set):
    index = torch.arange(200)
    s = dict(SETTINGS, SQUARE_QUERIES=300)
    verdicts = {}
    for name, net in (("plain", model), ("masked", Scaled(model))):
        correct = adv_testing.run_attacks(net, test_set, index, ["fgsm", "pgd", "square"], [0.1], s, "cpu")
        acc = {k: v.float().mean().item() for k, v in correct.items()}
        verdicts[name] = [msg for ok, msg in adv_testing.sanity_checks(acc, len(index)) if ok is False]
    masked = " ".join(verdicts["masked"])
    assert "gradients look masked; white-box figures overstate robustness" in masked
    assert not any("black-box" in m for m in verdicts["plain"]), verdicts["plain"]


def test_sanity_checks_on_hand_made_numbers():
    acc = {("clean", 0.0): 0.9, ("fgsm", 0.1): 0.5, ("fgsm", 0.2): 0.6, ("pgd", 0.1): 0.55,
           ("pgd", 0.2): 0.3}
    checks = adv_testing.sanity_checks(acc, 1000, 0.5, 0.3)
    text = [msg for ok, msg in checks if ok is False]
    assert any("fgsm: 50.0% at eps 0.1 -> 60.0% at 0.2" in m for m in text)
    assert any("30.0% accuracy" in m and "WARNING" in m for m in text)
    assert any("pgd 55.0% > fgsm 50.0% at eps 0.1" in m for m in text)
    assert [ok for ok, _ in checks][-1] is None  # no black-box attack: not run, not a pass


def test_deterministic(ckpt, tmp_path):
    args = [ckpt, "--attacks=pgd,square", "--eps=0.1", "--n=100", "--square_queries=50"]
    assert adv_testing.main(args + [f"--out={tmp_path / 'a.csv'}"]) == 0
    assert adv_testing.main(args + [f"--out={tmp_path / 'b.csv'}"]) == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_bad_input(ckpt, tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(open(ckpt, "rb").read()[:1000])
    other = load_checkpoint(ckpt)
    other["meta"] = dict(other["meta"], dataset="mnist")
    torch.save(other, tmp_path / "mnist.pt")
    out = tmp_path / "res" / "r.csv"
    cases = [([str(tmp_path / "nope.pt")], "no such checkpoint"),
             ([str(broken)], "truncated"),
             ([ckpt, "--attacks=fgsm,deepfool"], "unknown attack 'deepfool'"),
             ([ckpt, "--eps=0.1,1.5"], "(0, 1]"),
             ([ckpt, "--eps=0"], "(0, 1]"),
             ([ckpt, str(tmp_path / "mnist.pt")], "different datasets"),
             ([], "name at least one checkpoint")]
    for args, words in cases:
        assert run(adv_testing.main, args + [f"--out={out}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and err.count("\n") == 1, err
    assert not os.path.exists(out.parent)  # nothing half-written
