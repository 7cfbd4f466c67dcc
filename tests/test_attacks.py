"""attacks.py: the one registry both scripts build their attacks from, with the step rule named."""
import pytest
import torch
from torch import nn

import adv_testing
from robustlib import evaluation  # noqa: E402
from robustlib import attacks
from studies import make_figures
import vgg_training
from robustlib import training  # noqa: E402

TRAIN = vgg_training.settings_of(vars(vgg_training))
EVAL = adv_testing.settings_of(vars(adv_testing))


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x, y = torch.rand(12, 1, 8, 8), torch.randint(0, 10, (12,))
    return model, x, y


def test_step_rules_are_the_papers():
    rules = attacks.STEP_RULES
    assert rules["released"](0.3, 10) == pytest.approx(0.03)     # PC-LC notebook: eps / steps
    assert rules["madry"](0.3, 40) == pytest.approx(0.01875)     # Madry et al.: 2.5 eps / steps
    assert rules["wong"](0.3, 1) == pytest.approx(0.375)         # FGSM-RS: 1.25 eps
    assert rules["quarter"](0.3, 10) == pytest.approx(0.075)


def test_every_entry_stays_in_the_ball(monkeypatch):
    model, x, y = tiny()
    monkeypatch.setitem(attacks.SURROGATES, "tiny", model)  # transfer crafts on it
    knobs = attacks.Knobs(steps=2, step=0.05, classes=10, apgd_steps=2, fab_steps=2, square_queries=5,
                          spsa_iters=1, cw_steps=2, surrogate="tiny")
    for name in attacks.ATTACKS:
        torch.manual_seed(0)
        adv = attacks.build(name, model, 0.1, knobs)(x, y)
        assert adv.shape == x.shape, name
        assert (adv - x).abs().max() <= 0.1 + 1e-5 and adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6, name


def test_key_material_holds_what_the_attack_reads():
    base = attacks.Knobs(steps=10, step=0.01)
    assert attacks.key_material("fgsm", base) == {}
    assert attacks.key_material("pgd", base) == {"steps": 10, "step": 0.01}
    assert attacks.key_material("pgd", base) == attacks.key_material("pgd", attacks.Knobs(
        steps=10, step=0.01, fab_steps=99))  # a knob pgd does not read leaves its key alone
    assert attacks.key_material("fab-t", base) != attacks.key_material("fab-t", attacks.Knobs(fab_steps=99))
    for name, entry in attacks.ATTACKS.items():
        assert set(entry.reads) <= set(attacks.Knobs.__dataclass_fields__), name


def spy_on(monkeypatch, name):
    seen = []
    real = attacks.ATTACKS[name]

    def build(m, eps, knobs):
        seen.append((eps, knobs))
        return real.build(m, eps, knobs)
    monkeypatch.setitem(attacks.ATTACKS, name, real._replace(build=build))
    return seen


def test_training_evaluation_and_figures_build_from_the_registry(monkeypatch):
    model, x, y = tiny()
    seen = spy_on(monkeypatch, "pgd")
    training.make_attack(model, 10, dict(TRAIN, ADV_TRAIN="pgd", ADV_EPS=0.2, ADV_STEPS=5, ADV_STEP_SIZE=0.0))
    evaluation.build_attack("pgd", model, 0.2, 10, dict(EVAL, STEPS=5))
    make_figures.released("pgd", model, 0.2, 10)
    (e1, train), (e2, test), (e3, figure) = seen
    assert e1 == e2 == e3 == 0.2
    assert train.step == pytest.approx(0.1) and train.steps == 5          # madry: 2.5 * 0.2 / 5
    assert test.step == pytest.approx(0.04) and test.steps == 5           # released: 0.2 / 5
    assert figure.step == pytest.approx(0.02) and figure.steps == 10      # the notebook's 10 steps
    seen_mim = spy_on(monkeypatch, "mim")
    training.make_attack(model, 10, dict(TRAIN, ADV_TRAIN="mim", ADV_DECAY=0.7))
    evaluation.build_attack("mim", model, 0.2, 10, EVAL)
    assert [k.decay for _, k in seen_mim] == [0.7, 1.0]  # training's decay, the released evaluation's 1.0


@pytest.mark.parametrize("method", ["trades", "mart"])
def test_inner_attacks_get_the_step_and_steps(monkeypatch, method):
    model, x, y = tiny()
    calls = []
    monkeypatch.setattr(attacks, f"{method}_adversary", lambda *args: calls.append(args) or x)
    s = dict(TRAIN, ADV_TRAIN=method, ADV_EPS=0.2, ADV_STEPS=4, ADV_STEP_SIZE=0.0)
    training.make_attack(model, 10, s)(x, y)
    training.make_attack(model, 10, dict(s, ADV_STEP_SIZE=0.03))(x, y)
    # trades_adversary(model, x, step, eps, steps); mart_adversary(model, x, y, step, eps, steps)
    got = [args[-3:] for args in calls]
    assert got[0] == pytest.approx((0.125, 0.2, 4)) and got[1] == pytest.approx((0.03, 0.2, 4))


def test_evaluation_does_not_offer_training_inner_attacks(tmp_path, capsys):
    from robustlib.errors import run
    for name in attacks.TRAINING_ONLY:
        assert run(adv_testing.main, ["x.pt", f"--attacks={name}", f"--out={tmp_path}/r.csv"]) == 2
        assert "is out of range" in capsys.readouterr().err
    assert set(evaluation.EVALUATION) | set(attacks.TRAINING_ONLY) == set(attacks.ATTACKS)


def test_probability_margin_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    got = attacks.probability_margin(logits, torch.tensor([0, 1]))
    assert torch.allclose(got, torch.tensor([0.2 - 0.7, 0.6 - 0.3]), atol=1e-6)  # max other - true


def test_apgd_pm_maximises_the_probability_margin(monkeypatch):
    """The adaptive entry runs APGD on probability_margin itself (not on DLR, its stand-in's name)."""
    model, x, _ = tiny()
    with torch.no_grad():
        y = model(x).argmax(1)  # APGD attacks only what the model gets right
    seen = []
    real = attacks.probability_margin
    monkeypatch.setattr(attacks, "probability_margin", lambda z, t: seen.append(z.shape) or real(z, t))
    adv = attacks.build("apgd-pm", model, 0.3, attacks.Knobs(apgd_steps=5))(x, y)
    assert seen and all(s[1] == 10 for s in seen)
    with torch.no_grad():
        assert real(model(adv), y).mean() > real(model(x), y).mean()


class Saturated(nn.Module):
    """A network whose logits are scaled so far that softmax saturates in float32: cross-entropy and
    the probability margin have no gradient left, the rescaled logit margin (DLR) is unchanged."""

    def __init__(self, scale):
        super().__init__()
        torch.manual_seed(0)
        self.net, self.scale = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), scale

    def forward(self, x):
        return self.scale * self.net(x)


def test_dlr_breaks_what_saturation_hides():
    torch.manual_seed(1)
    x = torch.rand(64, 1, 8, 8)
    knobs = attacks.Knobs(apgd_steps=20)
    acc = {}
    for scale in (1.0, 1e4):
        model = Saturated(scale).eval()
        with torch.no_grad():
            y = model(x).argmax(1)
        for name in ("apgd-ce", "apgd-pm", "apgd-dlr"):
            with torch.no_grad():
                acc[(scale, name)] = (model(attacks.build(name, model, 0.1, knobs)(x, y)).argmax(1) == y).float().mean().item()
    assert acc[(1e4, "apgd-dlr")] == acc[(1.0, "apgd-dlr")] < 0.2      # DLR does not see the scale
    assert acc[(1e4, "apgd-ce")] > 0.7 and acc[(1e4, "apgd-pm")] > 0.7  # the saturated losses stall


def test_noise_is_the_seeded_floor():
    model, x, y = tiny()
    one = attacks.build("noise", model, 0.1, attacks.Knobs(seed=0))(x, y)
    assert torch.equal(one, attacks.build("noise", model, 0.1, attacks.Knobs(seed=0))(x, y))
    assert not torch.equal(one, attacks.build("noise", model, 0.1, attacks.Knobs(seed=1))(x, y))
    assert (one - x).abs().max() <= 0.1 + 1e-6 and (one - x).abs().max() > 0.05
    assert not attacks.ATTACKS["noise"].white and attacks.SUITES["adaptive"] == ["apgd-pm", "apgd-dlr", "feature-pull"]


def test_noise_beating_the_white_box_attacks_is_a_warning():
    acc = {("noise", 0.1): 0.40, ("pgd", 0.1): 0.80, ("fgsm", 0.1): 0.85}
    checks = evaluation.sanity_checks(acc, 200)
    assert any(ok is False and "noise 40.0% < best white-box 80.0%" in text for ok, text in checks)
    acc[("noise", 0.1)] = 0.95
    assert all(ok is not False for ok, _ in evaluation.sanity_checks(acc, 200))


def test_feature_pull_breaks_what_saturation_hides():
    """On the saturated network PGD (cross-entropy) moves nothing; the feature pull (here on the
    logits: the network has no embed) and its margin finish read the logits themselves. It stays in
    the ball and the image."""
    model = Saturated(1e4).eval()
    torch.manual_seed(1)
    x = torch.rand(200, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    knobs = attacks.Knobs(steps=10, step=0.03, apgd_steps=20)
    adv = {name: attacks.build(name, model, 0.1, knobs)(x, y) for name in ("pgd", "feature-pull")}
    with torch.no_grad():
        acc = {name: (model(a).argmax(1) == y).float().mean().item() for name, a in adv.items()}
    assert acc["pgd"] > 0.7 and acc["feature-pull"] < 0.2, acc
    a = adv["feature-pull"]
    assert (a - x).abs().max() <= 0.1 + 1e-6 and 0 <= a.min() and a.max() <= 1


def test_feature_pull_pulls_toward_the_nearest_other_class_in_the_embedding():
    """On a model with an embedding (model.embed), the samples it fools land in the class whose mean
    clean embedding is nearest to theirs, other than their own: the class it pulls them toward."""
    class Embedded(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 8)), nn.Linear(8, 3)

        def embed(self, x):
            return self.body(x)

        def forward(self, x):
            return self.head(self.embed(x))
    torch.manual_seed(1)
    model, x = Embedded().eval(), torch.rand(300, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # the samples an attack gets: those the model gets right
        e = model.embed(x)
        means = torch.stack([e[y == c].mean(0) for c in range(3)])
        d = torch.cdist(e, means)
        d[torch.arange(len(y)), y] = float("inf")
        adv = attacks.build("feature-pull", model, 0.3, attacks.Knobs(apgd_steps=10))(x, y)
        got = model(adv).argmax(1)
    fooled = got != y
    assert fooled.float().mean() > 0.5 and (got[fooled] == d.argmin(1)[fooled]).float().mean() > 0.8



def test_l2_versions_stay_in_the_l2_ball_and_others_refuse(monkeypatch):
    model, x, _ = tiny()
    with torch.no_grad():
        y = model(x).argmax(1)  # every image right: each attack moves it
    monkeypatch.setitem(attacks.SURROGATES, "tiny", model)
    knobs = attacks.Knobs(steps=3, step=0.3, classes=10, apgd_steps=3, fab_steps=2, square_queries=5, cw_steps=2,
                          surrogate="tiny", norm="l2")
    for name in attacks.L2:
        torch.manual_seed(0)
        adv = attacks.build(name, model, 1.0, knobs)(x, y)
        d = (adv - x).flatten(1)
        assert d.norm(dim=1).max() <= 1.0 + 1e-4 and adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6, name
        if name in ("pgd", "apgd-ce", "noise"):  # an L2 attack moves further than the L-inf ball of the same radius would let a pixel
            assert d.abs().max() > 0.3, name
    with pytest.raises(ValueError, match="mim has no L2 version"):
        attacks.build("mim", model, 1.0, knobs)
    assert attacks.suite("released", "l2") == ["fgsm", "pgd"] and attacks.suite("autoattack", "l2") == attacks.SUITES["autoattack"]
    assert "norm" not in attacks.key_material("pgd", attacks.Knobs()) and \
        attacks.key_material("pgd", knobs)["norm"] == "l2"  # L-inf keys as before, L2 ones apart
