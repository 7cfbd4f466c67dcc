"""The training objective and the reported statistics, each against a value written out here:
a test per wiring that a one-line slip (a swapped weight, an inverted choice, a flipped sign, an
ignored setting) would break while every run still finishes."""
import math
import warnings
from contextlib import nullcontext

import pytest
import torch
from torch.nn import functional as F

from robustlib import evaluation  # noqa: E402
import vgg_training
from robustlib import training  # noqa: E402
from hard_margin_loss import pc_loss
from margin_loss_soft_logit import logit_constraint_loss
from robustlib.metrics import mcnemar, probability_gap
from models import build_model
from spatial_structure_loss import SpatialStructureLoss

SETTINGS = vgg_training.settings_of(vars(vgg_training))


def net_and_batch():
    torch.manual_seed(0)
    model = build_model("lenet5", 1, 28, 10).eval()  # eval: two passes give the same values
    with torch.no_grad():
        model.head.weight.mul_(30)  # confident logits: every term of the objectives matters
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    x_adv = (x + 0.3 * torch.rand_like(x)).clamp(0, 1)
    return model, x, y, x_adv


@pytest.mark.parametrize("struct_on", ["embedding", "logits"])
def test_adversarial_objective_is_alpha_clean_beta_adv_plus_lambda_structure(struct_on):
    model, x, y, x_adv = net_and_batch()
    s = dict(SETTINGS, ADV_TRAIN="pgd", ALPHA=0.3, BETA=0.7, STRUCT_LAMBDA=2.5, STRUCT_ON=struct_on, STRUCT="ssc")
    net = training.WithEmbedding(model)
    loss, logits, structure = training.train_step(
        net, (x, y), torch.nn.CrossEntropyLoss(), lambda a, b: x_adv, training.structure_term(s), s,
        torch.autocast("cpu", enabled=False))
    with torch.no_grad():
        z, z_adv = model(x), model(x_adv)
        rep, rep_adv = (z, z_adv) if struct_on == "logits" else (model.embed(x), model.embed(x_adv))
        ssc = SpatialStructureLoss("euclidean")(rep, rep_adv)
        expected = 0.3 * F.cross_entropy(z, y) + 0.7 * F.cross_entropy(z_adv, y) + 2.5 * ssc
    assert torch.allclose(structure, ssc, atol=1e-6)
    assert torch.allclose(loss, expected, atol=1e-6)
    other = "embedding" if struct_on == "logits" else "logits"  # the two choices give other numbers
    rep_o = (z, z_adv) if other == "logits" else (model.embed(x), model.embed(x_adv))
    assert not torch.allclose(SpatialStructureLoss("euclidean")(*rep_o), ssc, atol=1e-4)


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_baseline_objectives_are_wired_with_beta(method):
    from adversarial_baselines import mart_objective, trades_objective
    model, x, y, x_adv = net_and_batch()
    s = dict(SETTINGS, ADV_TRAIN=method, ALPHA=0.3, BETA=4.0, STRUCT_LAMBDA=1.5, STRUCT_ON="logits")
    loss, _, structure = training.train_step(
        training.WithEmbedding(model), (x, y), torch.nn.CrossEntropyLoss(), lambda a, b: x_adv,
        training.structure_term(s), s, torch.autocast("cpu", enabled=False))
    fn = trades_objective if method == "trades" else mart_objective
    with torch.no_grad():
        z, z_adv = model(x), model(x_adv)
        expected = fn(z, z_adv, y, beta=4.0) + 1.5 * SpatialStructureLoss("euclidean")(z, z_adv)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(fn(z, z_adv, y, beta=4.0), fn(z, z_adv, y, beta=1.0))


@pytest.mark.parametrize("method,alpha,lam", [("pgd", 0.3, 0.0), ("pgd", 0.0, 0.0), ("pgd", 0.0, 2.5),
                                              ("trades", 0.0, 0.0), ("mart", 0.0, 0.0)])
def test_objective_gradient_with_and_without_clean_graph(method, alpha, lam):
    """The weights' gradient is that of the objective written out here, whether or not the clean
    forward keeps its graph (it does not for the weighted objective with ALPHA 0 and lambda 0)."""
    from adversarial_baselines import mart_objective, trades_objective
    model, x, y, x_adv = net_and_batch()
    s = dict(SETTINGS, ADV_TRAIN=method, ALPHA=alpha, BETA=0.7, STRUCT_LAMBDA=lam, STRUCT_ON="logits")
    loss = training.train_step(training.WithEmbedding(model), (x, y), torch.nn.CrossEntropyLoss(),
                                   lambda a, b: x_adv, training.structure_term(s), s, nullcontext())[0]
    got = torch.autograd.grad(loss, list(model.parameters()))
    z, z_adv = model(x), model(x_adv)
    expected = {"pgd": lambda: alpha * F.cross_entropy(z, y) + 0.7 * F.cross_entropy(z_adv, y),
                "trades": lambda: trades_objective(z, z_adv, y, beta=0.7),
                "mart": lambda: mart_objective(z, z_adv, y, beta=0.7)}[method]()
    expected = expected + lam * SpatialStructureLoss("euclidean")(z, z_adv)
    want = torch.autograd.grad(expected, list(model.parameters()))
    assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))


@pytest.mark.parametrize("device,amp,amp_cpu,cast", [("cpu", True, False, False), ("cpu", True, True, True),
                                                   ("cpu", False, True, False), ("cuda:1", True, False, True),
                                                   ("cuda", False, False, False)])
def test_training_cast_follows_amp_and_amp_cpu(device, amp, amp_cpu, cast):
    with warnings.catch_warnings():  # a CUDA autocast made without a GPU warns that it is disabled: not our output
        warnings.filterwarnings("ignore", "CUDA is not available", UserWarning)
        got = training.training_cast(dict(SETTINGS, AMP=amp, AMP_CPU=amp_cpu), device)
    assert isinstance(got, torch.autocast) == cast
    if cast:
        assert got.device == device.split(":")[0] and got.fast_dtype == torch.bfloat16


def test_the_training_attack_runs_under_the_cast():
    """AMP_CPU's speed comes from the attack's passes (most of a PGD step): they run under the cast too."""
    model, x, y, x_adv = net_and_batch()
    seen = []

    def attack(a, b):
        seen.append(torch.is_autocast_enabled("cpu"))
        return x_adv
    s = dict(SETTINGS, ADV_TRAIN="pgd", AMP_CPU=True)
    logits = training.train_step(training.WithEmbedding(model), (x, y), torch.nn.CrossEntropyLoss(), attack,
                                     training.structure_term(s), s, training.training_cast(s, "cpu"))[1]
    assert seen == [True] and logits.dtype == torch.bfloat16 and not torch.is_autocast_enabled("cpu")


def test_training_attacks_follow_their_rules():
    """fgsm-rs: a uniform start and one step of 1.25 eps by default; trades / mart: their own inner
    attacks; every X_adv in the ball and in [0, 1]; the model back in train mode."""
    model, x, y, _ = net_and_batch()
    model.train()
    for method, step in (("fgsm", 0.1), ("fgsm-rs", 0.125), ("pgd", 0.05), ("mim", 0.05),
                         ("trades", 0.05), ("mart", 0.05)):
        s = dict(SETTINGS, ADV_TRAIN=method, ADV_EPS=0.1, ADV_STEPS=5, ADV_STEP_SIZE=0.0)
        attack = training.make_attack(model, 10, s)
        torch.manual_seed(0)
        x_adv = attack(x, y)
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1, method
        assert model.training, method
        assert getattr(attack, "alpha", step) == pytest.approx(step), method
    rs = training.make_attack(model, 10, dict(SETTINGS, ADV_TRAIN="fgsm-rs", ADV_EPS=0.1))
    torch.manual_seed(1)
    a = rs(x, y)
    torch.manual_seed(2)
    assert not torch.equal(a, rs(x, y))  # the random start: other seeds, other points


def test_clean_objective_is_the_phase_loss_alone():
    model, x, y, _ = net_and_batch()
    criterion = training.phase_loss("pclc", 0.9, 0.3)
    s = dict(SETTINGS, ADV_TRAIN="none", ALPHA=0.3, BETA=0.7, STRUCT_LAMBDA=2.5)
    loss, logits, structure = training.train_step(
        training.WithEmbedding(model), (x, y), criterion, None, None, s, nullcontext())
    assert structure is None and torch.allclose(logits, model(x))
    assert torch.allclose(loss, criterion(model(x), y))  # neither ALPHA nor lambda touch it


def test_phase_losses_use_margin_and_lc_weight():
    torch.manual_seed(1)
    z, y = torch.randn(32, 10) * 3, torch.randint(0, 10, (32,))
    assert torch.allclose(training.phase_loss("pc", 0.5, 0.2)(z, y), pc_loss(z, y, xi=0.5))
    assert not torch.allclose(pc_loss(z, y, xi=0.5), pc_loss(z, y, xi=0.995))
    assert torch.allclose(training.phase_loss("pclc", 0.5, 0.2)(z, y),
                          pc_loss(z, y, xi=0.5) + 0.2 * logit_constraint_loss(z, y))
    assert torch.allclose(training.phase_loss("ce", 0.5, 0.2)(z, y), F.cross_entropy(z, y))


def test_probability_gap_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]))
    gap = probability_gap(logits, torch.tensor([0, 1, 2]))
    assert torch.allclose(gap, torch.tensor([0.5, -0.5, 0.1]), atol=1e-6)


def test_mcnemar_by_hand():
    a = torch.tensor([True] * 10 + [False] * 2 + [True] * 5)   # a right, b wrong on 10; the reverse on 2
    b = torch.tensor([False] * 10 + [True] * 2 + [True] * 5)
    exact = 2 * sum(math.comb(12, i) for i in range(3)) / 2 ** 12
    assert mcnemar(a, b) == pytest.approx(exact) and mcnemar(b, a) == pytest.approx(exact)
    assert mcnemar(a, a) == 1.0


def test_comparisons_sign_and_verdict():
    n = 100
    strong = torch.ones(n, dtype=torch.bool)
    weak = strong.clone()
    weak[:20] = False                          # 20 disagreements, all one way: p ~ 2e-6
    close = strong.clone()
    close[:2] = False                          # 2 disagreements: p = 0.5
    per_sample = {"A": {("worst", 0.1): strong}, "B": {("worst", 0.1): weak}, "C": {("worst", 0.1): close}}
    text = evaluation.comparisons(per_sample, ["A", "B", "C"])
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| A") or line.startswith("| B")}
    assert "| +20.0 |" in rows["A - B"] and "beyond noise" in rows["A - B"]
    assert "| +2.0 |" in rows["A - C"] and "within noise" in rows["A - C"]
    assert "| -18.0 |" in rows["B - C"] and "beyond noise" in rows["B - C"]
    assert rows["A - C"] == "| A - C | 0.1 | +2.0 | 0.5 | within noise |"  # the whole row, as the table prints it
    assert rows["A - B"].endswith(" | beyond noise |")
    assert text.startswith("\nWorst-case differences between checkpoints (same images; exact McNemar test, "
                           "beyond noise where p < 0.05):\n\n| pair | eps | difference (points) | p | verdict |\n"
                           "|---|---|---|---|---|\n| A - B |") and text.endswith(" |\n")
    assert evaluation.comparisons({"A": {}, "B": {}}, ["A", "B"]) == ""  # no worst case: no section


def test_wilson_by_hand():
    from robustlib.metrics import wilson
    low, high = wilson(8, 10)   # the textbook 95 % Wilson interval of 8/10: 0.490 .. 0.943
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    assert wilson(0, 0) == (0.0, 1.0)  # no images: the whole range
    assert wilson(1, 1)[0] == pytest.approx(0.2065, abs=1e-4)  # one image, right: z^2 / (1 + z^2)


def test_mcnemar_is_a_probability():
    # b = c = 1: the two-sided tail sum is 2 * 3/4 = 1.5, reported as 1.0
    assert mcnemar(torch.tensor([True, False]), torch.tensor([False, True])) == 1.0
    assert mcnemar(torch.tensor([True]), torch.tensor([False])) == 1.0  # one disagreement: p = 2 * 1/2


def test_large_eps_check_sentences():
    assert evaluation._large_eps(0.5, 0.02) == (True, "PGD at eps 0.5 leaves 2.0% accuracy")  # 2 % still passes
    assert evaluation._large_eps(0.5, 0.0) == (True, "PGD at eps 0.5 leaves 0.0% accuracy")
    assert evaluation._large_eps(0.5, 0.03) == (
        False, "PGD at eps 0.5 leaves 3.0% accuracy -- WARNING: it should reach about 0; gradients may be masked")
