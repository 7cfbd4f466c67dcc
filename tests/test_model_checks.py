"""AutoAttack's model checks (robustlib/model_checks.py): each fires on a model built to trip it, and
none on a plain network, alone and in adv_testing.py's table."""
import pandas as pd
import pytest
import torch
from torch import nn

import adv_testing
from robustlib.model_checks import (dynamic, enough_classes, model_checks, probabilities, randomized,
                                    zero_gradients)

PLANTED = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, kind="plain"):
        super().__init__()
        self.kind, self.flat, self.fc = kind, nn.Flatten(), nn.Linear(784, 10)

    def forward(self, x):
        if self.kind == "step":          # a quantised input: the gradient is zero everywhere
            x = (x > 0.5).float()
        if self.kind == "dynamic":       # the forward pass asks autograd for a gradient
            with torch.enable_grad():
                probe = x.detach().requires_grad_(True)
                g, = torch.autograd.grad(self.fc(self.flat(probe)).sum(), probe)
            x = x + 0 * g
        out = self.fc(self.flat(x))
        if self.kind == "random":
            out = out + 0.5 * torch.randn_like(out)
        if self.kind == "jitter":        # noise too small to change a prediction, not to be seen
            out = out + 2e-4 * torch.randn_like(out)
        if self.kind == "softmax":
            out = torch.softmax(out, dim=1)
        if self.kind == "sigmoid":       # in [0, 1] but not a distribution: logits of a kind
            out = torch.sigmoid(out)
        return out
'''


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted models (module `planted`) and a batch of digit-like images."""
    folder = tmp_path_factory.mktemp("planted")
    (folder / "planted.py").write_text(PLANTED)
    namespace = {}
    exec(PLANTED, namespace)
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    return folder, namespace["Net"], x, y


@pytest.mark.parametrize("kind, check", [("random", "randomized"), ("softmax", "probabilities"),
                                         ("step", "zero_gradients"), ("dynamic", "dynamic")])
def test_each_check_fires_on_its_model_alone(planted, kind, check):
    _, Net, x, y = planted
    torch.manual_seed(1)
    results = {"randomized": lambda m: randomized(m, x, y), "probabilities": lambda m: probabilities(m, x),
               "zero_gradients": lambda m: zero_gradients(m, x, y), "dynamic": lambda m: dynamic(m, x)}
    model = Net(kind).eval()
    for name, run in results.items():
        ok, sentence = run(model)
        assert ok == (name != check), (name, sentence)
        assert sentence.startswith("WARNING") == (name == check)
        assert "\n" not in sentence
    assert all(run(Net("plain").eval())[0] for run in results.values())


def test_the_warnings_say_what_to_run_next(planted):
    _, Net, x, y = planted
    assert "32 of 32 images" in zero_gradients(Net("step"), x, y)[1] and "--square_queries" in zero_gradients(Net("step"), x, y)[1]
    assert "--arch" in probabilities(Net("softmax"), x)[1]
    assert "expectation over transformation" in randomized(Net("random"), x, y)[1]
    assert "grad)" in dynamic(Net("dynamic"), x)[1] and "adaptive attack" in dynamic(Net("dynamic"), x)[1]


def test_the_boundaries_of_randomness_and_probabilities(planted):
    """Randomness the predictions do not show is still randomness; outputs in [0, 1] that do not sum
    to 1 are not probabilities."""
    _, Net, x, y = planted
    torch.manual_seed(2)
    model = Net("jitter").eval()
    with torch.no_grad():
        counts = {int((model(x).argmax(1) == y).sum()) for _ in range(5)}
    ok, sentence = randomized(model, x, y)
    assert len(counts) == 1 and not ok and "1 different counts" in sentence
    assert probabilities(Net("sigmoid"), x)[0]


def test_enough_classes_only_for_the_targeted_attacks():
    assert enough_classes(10, ["apgd-t", "fab-t"])[0]
    assert enough_classes(3, ["apgd-ce", "square"])[0]
    ok, sentence = enough_classes(3, ["apgd-ce", "apgd-t", "fab-t"])
    assert not ok and "with 3 classes" in sentence and "apgd-t, fab-t" in sentence


def test_one_pass_line_when_all_hold_and_each_failure_its_own_line(planted):
    _, Net, x, y = planted
    got = model_checks(Net("plain"), x, y, 10, ["apgd-t"])
    assert len(got) == 1 and got[0][0] and got[0][1].startswith("AutoAttack's model checks: ")
    got = model_checks(Net("softmax"), x, y, 3, ["apgd-t"])
    assert [ok for ok, _ in got] == [False, False]


def test_adv_testing_reports_them_per_model(planted, ckpt, tmp_path):
    """A plain trained network passes; a softmax network loaded through --arch gets the warning, in the
    table's checks, beside the same plain checkpoint."""
    folder, Net, _, _ = planted
    torch.manual_seed(0)
    torch.save(Net("softmax").state_dict(), tmp_path / "softmax.pth")
    out = tmp_path / "plain.csv"
    common = ["--attacks=fgsm,pgd", "--eps=0.1", "--n=40", "--n_strong=20", f"--out={out}"]
    assert adv_testing.main([ckpt] + common) == 0
    text = out.with_suffix(".md").read_text()
    assert "PASS AutoAttack's model checks: the forward pass is deterministic" in text
    assert "WARNING" not in text.split("Sanity checks")[1].split("probabilities")[0]
    out2 = tmp_path / "softmax.csv"
    assert adv_testing.main([str(tmp_path / "softmax.pth"), f"--arch={folder / 'planted.py'}:Net",
                             "--arch_args=kind=softmax", "--dataset=digits"] + common[:-1] + [f"--out={out2}"]) == 0
    lines = [line for line in out2.with_suffix(".md").read_text().splitlines() if "returns probabilities" in line]
    assert len(lines) == 1 and lines[0].startswith("- tmp") is False and "WARNING" in lines[0]
    assert not pd.read_csv(out2).empty
