"""adv_testing.py on a LeNet-5 trained inside the test on `digits`."""
import os

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import adv_testing
from robustlib import evaluation  # noqa: E402
from robustlib import attacks
from robustlib.checkpoints import load_checkpoint
from robustlib.errors import run

SETTINGS = adv_testing.settings_of(vars(adv_testing))


@pytest.mark.slow
def test_fgsm_matches_hand_written(ckpt, model, test_set, tmp_path):
    out = tmp_path / "r.csv"
    assert adv_testing.main([ckpt, "--attacks=fgsm", "--eps=0.1", f"--out={out}"]) == 0
    table = pd.read_csv(out)
    script_acc = table[(table.attack == "fgsm") & (table.eps == 0.1)]["accuracy"].item()
    x, y = test_set.batch(torch.arange(len(test_set)))
    x = x.clone().requires_grad_()
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    adv = (x + 0.1 * grad.sign()).clamp(0, 1)
    robust = (model(x).argmax(1) == y) & (model(adv).argmax(1) == y)  # wrong clean counts as broken
    mine = robust.float().mean().item()
    assert abs(script_acc - mine) * len(test_set) <= 1.0
    assert list(table.columns) == ["checkpoint", "attack", "eps", "accuracy", "ci_low", "ci_high", "n", "budget"]
    assert set(table.attack) == {"clean", "fgsm", "worst", "pgd-large-eps"}
    assert (table[table.attack != "pgd-large-eps"].n == 360).all()
    assert (table[table.attack == "pgd-large-eps"].n == adv_testing.N_STRONG).all()  # on the strong subset
    assert (tmp_path / "r.md").read_text().count("| fgsm | 0.1 | 360 | quick |") == 1
    assert (tmp_path / "r.png").stat().st_size > 1000


@pytest.mark.slow
def test_eps_zero_is_clean_and_worst_is_per_sample_minimum(model, test_set):
    index = torch.arange(len(test_set))
    correct = evaluation.run_attacks(model, test_set, index, ["fgsm", "mim", "pgd"], [0.0, 0.1],
                                      SETTINGS, "cpu")
    for name in ("fgsm", "mim", "pgd"):
        assert torch.equal(correct[(name, 0.0)], correct[("clean", 0.0)])
    worst = evaluation.worst_case(correct, [0.1])[("worst", 0.1)]
    for name in ("clean", "fgsm", "mim", "pgd"):
        key = (name, 0.0 if name == "clean" else 0.1)
        assert not (worst & ~correct[key]).any()  # robust in worst => robust under each attack
    assert worst.float().mean() <= min(correct[(a, 0.1)].float().mean() for a in ("fgsm", "mim", "pgd"))
    assert all(p.grad is None for p in model.parameters())  # attacks leave gradients untouched
    assert not model.training


def test_only_images_the_model_gets_right_are_attacked(model, test_set, monkeypatch):
    seen = []
    real = attacks.ATTACKS["fgsm"]

    def build(m, eps, knobs):
        attack = real.build(m, eps, knobs)

        def spy(x, y):
            with torch.no_grad():
                seen.append(bool((m(x).argmax(1) == y).all()))
            seen.append(len(y))
            return attack(x, y)
        return spy

    monkeypatch.setitem(attacks.ATTACKS, "fgsm", real._replace(build=build))
    index = torch.arange(len(test_set))
    correct = evaluation.run_attacks(model, test_set, index, ["fgsm"], [0.1], SETTINGS, "cpu")
    clean = correct[("clean", 0.0)]
    assert 0 < clean.sum() < len(index)  # some images are wrong to begin with
    assert all(seen[0::2]) and sum(seen[1::2]) == clean.sum()  # exactly the right ones are attacked
    assert not (correct[("fgsm", 0.1)] & ~clean).any()  # a wrong image never counts as robust


def test_memory_layout_does_not_change_results(model, test_set):
    index = torch.arange(len(test_set))
    acc = {}
    for layout in (True, False):
        s = dict(SETTINGS, CHANNELS_LAST=layout)
        correct = evaluation.run_attacks(model, test_set, index, ["fgsm", "pgd"], [0.1], s, "cpu")
        acc[layout] = {k: int(v.sum()) for k, v in correct.items()}
    for key in acc[True]:  # the same up to float rounding: at most 2 of 360 images differ
        assert abs(acc[True][key] - acc[False][key]) <= 2, (key, acc)


class Scaled(torch.nn.Module):
    """Logits times 1e4: softmax saturates, the CE gradient vanishes (masked gradients)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e4


@pytest.mark.slow
def test_masking_warning_fires_only_on_masked_model(model, test_set):
    index = torch.arange(200)
    s = dict(SETTINGS, SQUARE_QUERIES=300)
    verdicts = {}
    for name, net in (("plain", model), ("masked", Scaled(model))):
        correct = evaluation.run_attacks(net, test_set, index, ["fgsm", "pgd", "square"], [0.1], s, "cpu")
        acc = {k: v.float().mean().item() for k, v in correct.items()}
        verdicts[name] = [msg for ok, msg in evaluation.sanity_checks(acc, len(index)) if ok is False]
    masked = " ".join(verdicts["masked"])
    assert "gradients look masked; white-box figures overstate robustness" in masked
    assert not any("black-box" in m for m in verdicts["plain"]), verdicts["plain"]


def test_sanity_checks_on_hand_made_numbers():
    acc = {("clean", 0.0): 0.9, ("fgsm", 0.1): 0.5, ("fgsm", 0.2): 0.6, ("pgd", 0.1): 0.55,
           ("pgd", 0.2): 0.3}
    checks = evaluation.sanity_checks(acc, 1000, 0.5, 0.3)
    text = [msg for ok, msg in checks if ok is False]
    assert any("fgsm: 50.0% at eps 0.1 -> 60.0% at 0.2" in m for m in text)
    assert any("30.0% accuracy" in m and "WARNING" in m for m in text)
    assert any("pgd 55.0% > fgsm 50.0% at eps 0.1" in m for m in text)
    black = [ok for ok, msg in checks if "black-box check" in msg]
    assert black == [None]  # no black-box attack: not run, not a pass
    assert [ok for ok, msg in checks if "released-vs-AutoAttack" in msg] == [None]


def test_deterministic(ckpt, tmp_path):
    args = [ckpt, "--attacks=pgd,square,apgd-t", "--eps=0.1", "--n=100", "--square_queries=50",
            "--apgd_steps=5"]
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
             ([ckpt, "--attacks=fgsm,deepfool"], "--attacks=fgsm,deepfool is out of range: allowed a comma list of at least 1 item, each item one of fgsm"),
             ([ckpt, "--steps=0"], "--steps=0 is out of range"),
             ([ckpt, "--batch_size=0"], "--batch_size=0 is out of range"),
             ([ckpt, "--square_queries=0"], "--square_queries=0 is out of range"),
             ([ckpt, "--eps=0.1,1.5"], "an L-inf radius is at most 1"), ([ckpt, "--norm=l1"], "one of linf, l2"),
             ([ckpt, "--norm=l2", "--attacks=mim"], "mim has no L2 version"),
             ([ckpt, "--eps=abc"], "--eps=abc is out of range"),
             ([ckpt, "--eps=0"], "(0, inf)"),
             ([ckpt, str(tmp_path / "mnist.pt")], "different datasets"),
             ([], "name at least one checkpoint")]
    for args, words in cases:
        assert run(adv_testing.main, args + [f"--out={out}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and err.count("\n") == 1, err
    assert not os.path.exists(out.parent)  # nothing half-written


FAST = ["--apgd_steps=10", "--fab_steps=10", "--square_queries=300", "--spsa_iters=1"]
FAST_SETTINGS = dict(SETTINGS, APGD_STEPS=10, FAB_STEPS=10, SQUARE_QUERIES=300, SPSA_ITERS=1)


def test_suites_expand_as_documented():
    assert evaluation.expand(["released"]) == ["fgsm", "mim", "pgd", "spsa"]
    assert evaluation.expand(["autoattack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert evaluation.expand(["pgd", "released", "square", "autoattack"]) == \
        ["pgd", "fgsm", "mim", "spsa", "square", "apgd-ce", "apgd-t", "fab-t"]
    assert adv_testing.ATTACKS == ["released", "autoattack"]  # the default: both, worst over all


@pytest.mark.slow
def test_default_suite_worst_and_intervals(ckpt, tmp_path):
    out = tmp_path / "r.csv"
    assert adv_testing.main([ckpt, "--eps=0.1", "--n=120", "--n_strong=80", f"--out={out}", *FAST]) == 0
    table = pd.read_csv(out)
    rows = table[table.eps == 0.1].set_index("attack")
    assert list(rows.index) == ["fgsm", "mim", "pgd", "spsa", "apgd-ce", "apgd-t", "fab-t", "square",
                                "worst-released", "worst-autoattack", "worst"]
    for suite in ("released", "autoattack"):  # a suite's worst is never below the overall worst
        assert rows.loc[f"worst-{suite}", "accuracy"] >= rows.loc["worst", "accuracy"] - 1e-9
        assert rows.loc[f"worst-{suite}", "accuracy"] <= rows.loc[attacks.SUITES[suite], "accuracy"].min() + 1e-9
    assert rows.loc["fgsm", "n"] == 120 and rows.loc["apgd-t", "n"] == 80 and rows.loc["worst", "n"] == 80
    assert (table.ci_low <= table.accuracy).all() and (table.accuracy <= table.ci_high).all()
    assert ((table.ci_high - table.ci_low) > 0).all()
    # Wilson 95 %: 0 correct of 80 -> [0, 4.58 %]; recompute every row's interval independently
    from robustlib.metrics import wilson
    for _, r in table.iterrows():
        low, high = wilson(round(r.accuracy * r.n), r.n)
        assert abs(low - r.ci_low) < 1e-5 and abs(high - r.ci_high) < 1e-5
    assert abs(wilson(0, 80)[1] - 0.0458) < 5e-4 and abs(wilson(40, 80)[0] - 0.3930) < 5e-4
    assert rows.loc["worst", "accuracy"] <= rows.drop("worst")["accuracy"].min() + 1e-9  # every row, suites too
    text = (tmp_path / "r.md").read_text()
    assert "| **worst** | 0.1 | 80 |" in text and "released-vs-AutoAttack" not in text


@pytest.mark.slow
def test_worst_never_above_any_attack_per_sample(model, test_set):
    index = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(1))[:90]
    names = evaluation.expand(["released", "autoattack"])
    correct = evaluation.run_attacks(model, test_set, index, names, [0.05, 0.1], FAST_SETTINGS,
                                      "cpu", n_strong=60)
    worst = evaluation.worst_case(correct, [0.05, 0.1])
    aa = evaluation.worst_case(correct, [0.05, 0.1], attacks.SUITES["autoattack"])
    for eps in (0.05, 0.1):
        w = worst[("worst", eps)]
        assert len(w) == 60
        for name in names:
            assert not (w & ~correct[(name, eps)][:60]).any(), name  # robust in worst => under each
        assert not (w & ~aa[("worst", eps)]).any()  # AutoAttack's rows never more robust than worst
        assert w.sum() <= aa[("worst", eps)].sum()


@pytest.mark.slow
def test_released_vs_autoattack_warning(model, test_set):
    """A model whose logits are multiplied by 1e4 after a saturating layer: CE gradients vanish,
    so the released attacks (CE-based) fail while AutoAttack (DLR loss, Square) does not. At eps
    0.3 both suites break the plain model completely: there the check must stay quiet. (At
    smaller eps the released attacks are honestly weaker than AutoAttack on a plain model too, by
    several points, and the check says so: that is a finding, not noise.)"""
    index = torch.arange(150)
    verdicts = {}
    for name, net in (("plain", model), ("masked", Scaled(model))):
        correct = evaluation.run_attacks(net, test_set, index, evaluation.expand(["released", "autoattack"]),
                                          [0.3], FAST_SETTINGS, "cpu")
        acc = {k: v.float().mean().item() for k, v in correct.items()}
        suites = {n: {e: v.float().mean().item() for (_, e), v in
                      evaluation.worst_case(correct, [0.3], members).items()}
                  for n, members in attacks.SUITES.items()}
        verdicts[name] = [msg for ok, msg in evaluation.sanity_checks(acc, len(index), suites=suites)
                          if ok is False]
    masked = [m for m in verdicts["masked"] if "released attacks overstate" in m]
    assert masked and masked[0].startswith("WARNING the released attacks overstate robustness by ")
    assert " points at eps 0.3" in masked[0]
    assert not any("released attacks overstate" in m for m in verdicts["plain"]), verdicts["plain"]


def test_mcnemar_and_wilson_on_known_numbers():
    from robustlib.metrics import mcnemar, wilson
    a = torch.tensor([True] * 10 + [False] * 10)
    assert mcnemar(a, a) == 1.0
    b = torch.tensor([False] * 10 + [False] * 10)  # 10 discordant pairs, all one way
    assert abs(mcnemar(a, b) - 2 / 2 ** 10) < 1e-12
    low, high = wilson(50, 100)
    assert abs(low - 0.4038) < 1e-4 and abs(high - 0.5962) < 1e-4


KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
import adv_testing
from robustlib import evaluation
original = evaluation.atomic_write
def write_then_die(path, write):
    original(path, write)
    if path.endswith(".pt"):  # the first finished job is stored: die the hard way
        os.kill(os.getpid(), signal.SIGKILL)
evaluation.atomic_write = write_then_die
sys.exit(adv_testing.main(sys.argv[1:]))
"""
QUICK = ["--attacks=fgsm,pgd,square", "--eps=0.05,0.1", "--n=120", "--n_strong=60", "--square_queries=50"]


def computed(log_text):
    return sum("computed in" in line for line in log_text.splitlines())


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_csv(ckpt, tmp_path, root):
    import signal
    import subprocess
    import sys
    whole = tmp_path / "whole" / "r.csv"
    assert adv_testing.main([ckpt, *QUICK, f"--out={whole}"]) == 0
    jobs = computed((tmp_path / "whole" / "r.log").read_text())
    assert jobs == 1 + 3 * 2 + 1  # clean, 3 attacks x 2 eps, the large-eps PGD check
    out = tmp_path / "killed" / "r.csv"
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=root))
    killed = subprocess.run([sys.executable, str(script), ckpt, *QUICK, f"--out={out}"], cwd=root,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL and not out.exists()
    assert len(os.listdir(tmp_path / "killed" / "r.cache")) == 1
    assert adv_testing.main([ckpt, *QUICK, f"--out={out}"]) == 0
    log = (tmp_path / "killed" / "r.log").read_text()
    assert computed(log) == jobs - 1 and log.count("cached") == 1  # only the killed run's job is reused
    assert out.read_text() == whole.read_text()
    # a changed setting recomputes exactly the jobs it touches; --fresh recomputes everything
    assert adv_testing.main([ckpt, *QUICK[:-1], "--square_queries=60", f"--out={out}"]) == 0
    log2 = (tmp_path / "killed" / "r.log").read_text()[len(log):]
    assert computed(log2) == 2 and log2.count("cached") == jobs - 2
    assert adv_testing.main([ckpt, *QUICK, "--fresh=true", f"--out={out}"]) == 0
    log3 = (tmp_path / "killed" / "r.log").read_text()[len(log) + len(log2):]
    assert computed(log3) == jobs and out.read_text() == whole.read_text()


USER_MODEL = """
from torch import nn

class MyLeNet(nn.Module):  # the released models return (logits, features)
    def __init__(self, classes=10, width=84):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        emb = self.features(x)
        return self.head(emb), emb
"""


@pytest.mark.slow
def test_plain_state_dict_and_own_class_match_checkpoint(ckpt, tmp_path):
    state = load_checkpoint(ckpt)
    torch.save({f"module.{k}": v for k, v in state["model"].items()}, tmp_path / "plain.pth")  # DataParallel style
    (tmp_path / "mine.py").write_text(USER_MODEL)
    args = ["--attacks=fgsm,mim", "--eps=0.1", "--n=150", "--channels_last=true"]  # one layout for all
    runs = {"ckpt": [ckpt],
            "plain": [str(tmp_path / "plain.pth"), "--model=lenet5", "--dataset=digits"],
            "arch": [str(tmp_path / "plain.pth"), f"--arch={tmp_path / 'mine.py'}:MyLeNet",
                     "--arch_args=classes=10,width=84", "--dataset=digits"],
            "arch-ckpt": [ckpt, f"--arch={tmp_path / 'mine.py'}:MyLeNet"]}
    tables = {}
    for name, extra in runs.items():
        out = tmp_path / name / "r.csv"
        assert adv_testing.main([*extra, *args, f"--out={out}"]) == 0
        tables[name] = pd.read_csv(out)[["attack", "eps", "accuracy", "n"]]
    for name in ("plain", "arch", "arch-ckpt"):
        assert tables[name].equals(tables["ckpt"]), name


SEQUENTIAL_MODEL = USER_MODEL + """

def lenet_sequential():  # a function returning an nn.Sequential, as fast_adversarial's mnist_net()
    net = MyLeNet()
    return nn.Sequential(*net.features, net.head)
"""


def test_own_function_returning_a_module(ckpt, tmp_path):
    """--arch names a function that returns the module (fast_adversarial's released MNIST models are
    state_dicts of mnist_net(), an nn.Sequential): the same table as the project's checkpoint."""
    state = load_checkpoint(ckpt)["model"]
    flat = {(k.replace("head.", "11.") if k.startswith("head.") else k.replace("features.", "")): v
            for k, v in state.items()}
    torch.save(flat, tmp_path / "seq.pth")
    (tmp_path / "seq.py").write_text(SEQUENTIAL_MODEL)
    args = ["--attacks=fgsm,mim", "--eps=0.1", "--n=150", "--channels_last=true"]
    tables = {}
    for name, extra in {"ckpt": [ckpt], "function": [str(tmp_path / "seq.pth"), "--dataset=digits",
                                                      f"--arch={tmp_path / 'seq.py'}:lenet_sequential"]}.items():
        assert adv_testing.main([*extra, *args, f"--out={tmp_path / name / 'r.csv'}"]) == 0
        tables[name] = pd.read_csv(tmp_path / name / "r.csv")[["attack", "eps", "accuracy", "n"]]
    assert tables["function"].equals(tables["ckpt"])


VIEW_MODEL = USER_MODEL.replace(  # the same layers, flattened with .view() (as the released code does)
    "emb = self.features(x)", "emb = self.features[7:](self.features[:6](x).view(len(x), -1))")


def test_own_class_calling_view_runs_in_its_layout(ckpt, tmp_path, capsys):
    """Code that calls .view() on activations fails on channels_last tensors: --arch classes run
    in the default layout unless asked, and asking gives a one-line error, not a traceback."""
    (tmp_path / "view.py").write_text(VIEW_MODEL)
    base = [ckpt, f"--arch={tmp_path / 'view.py'}:MyLeNet", "--attacks=fgsm", "--eps=0.1", "--n=50"]
    assert adv_testing.main([*base, f"--out={tmp_path / 'a' / 'r.csv'}"]) == 0
    reference = [ckpt, "--attacks=fgsm", "--eps=0.1", "--n=50", "--channels_last=false"]
    assert adv_testing.main([*reference, f"--out={tmp_path / 'b' / 'r.csv'}"]) == 0
    mine, theirs = (pd.read_csv(tmp_path / d / "r.csv")[["attack", "eps", "accuracy", "n"]] for d in "ab")
    assert mine.equals(theirs)
    capsys.readouterr()
    assert run(adv_testing.main, [*base, "--channels_last=true", f"--out={tmp_path / 'c' / 'r.csv'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "try --channels_last=false" in err and err.count("\n") == 1, err


def test_foreign_file_errors(ckpt, tmp_path, capsys):
    state = load_checkpoint(ckpt)
    torch.save(state["model"], tmp_path / "plain.pth")
    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "three.py").write_text("def three():\n    return 3\n")
    plain = str(tmp_path / "plain.pth")
    cases = [([plain, "--dataset=digits"], "plain state_dict: name its architecture with --model=NAME"),
             ([plain, "--model=lenet5"], "does not name its dataset: add --dataset=NAME"),
             ([plain, "--model=cnn3", "--dataset=digits"], "do not fit"),
             ([plain, f"--arch={tmp_path / 'bad.py'}:Net", "--dataset=digits"], "RuntimeError: boom"),
             ([plain, f"--arch={tmp_path / 'nope.py'}:Net", "--dataset=digits"], "no such file"),
             ([plain, f"--arch={tmp_path / 'three.py'}:three", "--dataset=digits"], "not a torch.nn.Module"),
             ([plain, f"--arch={tmp_path / 'bad.py'}", "--dataset=digits"], "--arch="),
             ([plain, "--arch_args=a", "--model=lenet5", "--dataset=digits"], "--arch_args=a is out of range")]
    for args, words in cases:
        assert run(adv_testing.main, args + [f"--out={tmp_path / 'o' / 'r.csv'}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(ckpt, tmp_path, root):
    import subprocess
    import sys
    args = [ckpt, "--attacks=fgsm,mim,pgd", "--eps=0.1", "--n=200", "--batch_size=40", "--device=cpu"]
    one = tmp_path / "one" / "r.csv"
    assert adv_testing.main([*args, f"--out={one}"]) == 0
    two = tmp_path / "two" / "r.csv"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "adv_testing.py", "--", *args, f"--out={two}"]  # "--": torchrun would read --n as its own
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[:3000] + "\n...\n" + res.stderr[-1500:]
    assert res.stdout.count("written:") == 1  # rank 0 alone writes
    assert two.read_text() == one.read_text()  # fgsm and mim deterministic; pgd seeded per block


def test_command_line_and_run_attacks_are_one_path(ckpt, model, test_set, tmp_path):
    """main (with its cache) and run_attacks (tests, bench) give the same per-sample numbers on
    the same images: one evaluation path, one subset rule."""
    out = tmp_path / "r.csv"
    assert adv_testing.main([ckpt, "--attacks=fgsm,square", "--eps=0.1", "--n=120", "--n_strong=50",
                             "--square_queries=40", "--channels_last=true", f"--out={out}"]) == 0
    table = pd.read_csv(out).set_index("attack")
    s = dict(SETTINGS, SQUARE_QUERIES=40, CHANNELS_LAST=True)
    index = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))
    # run_attacks' index is the cheap attacks' images: the first N of the permutation
    correct = evaluation.run_attacks(model.to(memory_format=torch.channels_last), test_set, index[:120],
                                      ["fgsm", "square"], [0.1], s, "cpu", n_strong=50)
    assert table.loc["fgsm", "accuracy"] == pytest.approx(correct[("fgsm", 0.1)].float().mean().item(), abs=1e-6)
    assert table.loc["square", "accuracy"] == pytest.approx(correct[("square", 0.1)].float().mean().item(), abs=1e-6)
    assert table.loc["fgsm", "n"] == 120 and table.loc["square", "n"] == 50


def test_verdict_per_model_compares_each_suite_with_the_worst_case():
    import pandas as pd
    rows = []
    for label, (rel, aa, ad, worst) in {"a/final": (0.7, 0.6, 0.55, 0.55), "b/final": (0.5, 0.5, 0.6, 0.5)}.items():
        for attack, acc in (("worst-released", rel), ("worst-autoattack", aa), ("worst-adaptive", ad), ("worst", worst)):
            rows.append(dict(checkpoint=label, attack=attack, eps=0.1, accuracy=acc))
    rows.append(dict(checkpoint="c/final", attack="worst", eps=0.1, accuracy=0.3))  # no suite: no line
    text = evaluation.verdicts(pd.DataFrame(rows), ["a/final", "b/final", "c/final"])
    lines = [line for line in text.splitlines() if line.startswith("- ")]
    assert lines == [
        "- a/final: eps 0.1: released 70.0, autoattack 60.0, adaptive 55.0, worst 55.0 (%). The released attacks "
        "overstate it by up to 15.0 points (eps 0.1); AutoAttack overstates it by up to 5.0 points (eps 0.1).",
        "- b/final: eps 0.1: released 50.0, autoattack 50.0, adaptive 60.0, worst 50.0 (%). The released attacks "
        "miss nothing; AutoAttack misses nothing."]
    assert evaluation.verdicts(pd.DataFrame(rows[-1:]), ["c/final"]) == ""


def test_transfer_from_the_model_itself_is_its_apgd_ce(ckpt, tmp_path):
    """--surrogate: APGD-CE crafted on the surrogate. With the model itself as its own surrogate the
    transfer row is exactly the apgd-ce row (same seeds, same blocks)."""
    import pandas as pd
    out = tmp_path / "t.csv"
    assert adv_testing.main([ckpt, f"--surrogate={ckpt}", "--attacks=apgd-ce", "--eps=0.1,0.3", "--n=60",
                             "--n_strong=40", f"--out={out}"]) == 0
    rows = pd.read_csv(out).set_index(["attack", "eps"]).accuracy
    assert rows[("transfer", 0.1)] == rows[("apgd-ce", 0.1)] and rows[("transfer", 0.3)] == rows[("apgd-ce", 0.3)]
    assert rows[("transfer", 0.1)] < rows[("clean", 0.0)]


def test_transfer_keys_name_the_surrogate():
    s = dict(SETTINGS, SURROGATE_ID="a")
    one = evaluation.job_key("m", "transfer", 0.1, "d", 10, s, "cpu")
    assert one != evaluation.job_key("m", "transfer", 0.1, "d", 10, dict(s, SURROGATE_ID="b"), "cpu")
    assert evaluation.job_key("m", "apgd-ce", 0.1, "d", 10, s, "cpu") == evaluation.job_key(
        "m", "apgd-ce", 0.1, "d", 10, dict(s, SURROGATE_ID="b"), "cpu")  # other attacks: unchanged


def test_bad_surrogates_are_one_line(ckpt, tmp_path, capsys):
    common = ["--attacks=fgsm", "--eps=0.1", "--n=20", "--n_strong=10", f"--out={tmp_path / 'b.csv'}"]
    state = torch.load(ckpt, weights_only=False)
    torch.save(state["model"], tmp_path / "plain.pth")
    state["meta"]["dataset"] = "mnist"
    torch.save(state, tmp_path / "other.pt")
    for extra, expected in ((["--attacks=transfer"], "needs --surrogate=CHECKPOINT"),
                            ([f"--surrogate={tmp_path / 'none.pt'}"], "none.pt"),
                            ([f"--surrogate={tmp_path / 'plain.pth'}"], "is not a checkpoint of this project"),
                            ([f"--surrogate={tmp_path / 'other.pt'}"], "is a model of mnist, the table's models are of digits")):
        assert run(adv_testing.main, [ckpt] + common + extra) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err


def test_transfer_crafts_on_the_surrogate_not_on_the_model(ckpt, tmp_path):
    """A surrogate that has learned nothing moves few images: the transfer row stays near clean while
    APGD-CE on the model itself breaks it."""
    import pandas as pd
    import vgg_training
    blank = tmp_path / "blank"
    assert vgg_training.main(["--dataset=digits", "--warmup_epochs=1", "--epochs=0", "--lr=1e-7", "--seed=5",
                              f"--out_dir={blank}"]) == 0
    out = tmp_path / "t.csv"
    assert adv_testing.main([ckpt, f"--surrogate={blank / 'final.pt'}", "--attacks=apgd-ce", "--eps=0.3", "--n=60",
                             "--n_strong=60", f"--out={out}"]) == 0
    rows = pd.read_csv(out).set_index(["attack", "eps"]).accuracy
    assert rows[("transfer", 0.3)] > rows[("apgd-ce", 0.3)] + 0.3


def test_l2_threat_model_end_to_end(ckpt, tmp_path):
    """--norm=l2: the suites' L2 attacks as rows, the L2 large-radius check, the table says so, and no
    job of the same eps under L-inf is reused from the shared cache."""
    out = tmp_path / "r.csv"
    common = [ckpt, "--eps=0.5", "--n=40", "--n_strong=20", "--apgd_steps=3", "--fab_steps=2", "--square_queries=20",
              "--spsa_iters=1", f"--out={out}"]
    assert adv_testing.main(common + ["--attacks=released,autoattack,adaptive,noise"]) == 0  # L-inf first: 0.5 is a valid radius
    before = len(out.with_suffix(".log").read_text().splitlines())
    assert adv_testing.main(common + ["--norm=l2", "--attacks=released,autoattack,adaptive,noise"]) == 0
    table = pd.read_csv(out)
    attacked = set(table.attack) - {"clean", "worst", "pgd-large-eps"} - {a for a in table.attack if a.startswith("worst-")}
    assert attacked == {"fgsm", "pgd", "apgd-ce", "apgd-t", "fab-t", "square", "apgd-pm", "apgd-dlr", "feature-pull", "noise"}
    large = table[table.attack == "pgd-large-eps"]
    assert list(large.eps) == [evaluation.LARGE_EPS_L2["mnist"]] and large.accuracy.max() < 0.1
    assert (out.with_suffix(".md")).read_text().startswith("Threat model: L2")
    l2_jobs = out.with_suffix(".log").read_text().splitlines()[before:]
    assert len(l2_jobs) == 1 + 10 + 1 and [j.endswith("cached") for j in l2_jobs].count(True) == 1  # clean alone
