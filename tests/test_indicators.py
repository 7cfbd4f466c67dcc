"""The indicators of attack failure (indicators.py), each on an attack built to trip it, silent on a
sound attack against a trained LeNet-5, and through adv_testing's checks as one warning line."""
import pytest
import torch
import torchattacks as ta

import adv_testing
from robustlib import attacks, evaluation, indicators

SETTINGS = dict(adv_testing.settings_of(vars(adv_testing)), CHANNELS_LAST=False, APGD_STEPS=30)


def throws_away(m, eps, k):
    """Finds adversarial points with PGD on the watched model, then returns the clean images."""
    return lambda x, y: (ta.PGD(m, eps=eps, alpha=eps / 4, steps=10)(x, y), x)[1]


def late(m, eps, k):
    """Fools image i only at forward pass 40 i / n of 40: the last passes still fool new images."""
    def run(x, y):
        adv = ta.PGD(m.model, eps=eps, alpha=eps / 4, steps=10)(x, y)  # unwatched
        order = torch.arange(len(y))
        for k in range(40):
            m(torch.where((order <= k * len(y) / 40).view(-1, 1, 1, 1), adv, x))
        return adv
    return run


def plant(monkeypatch, build):
    monkeypatch.setitem(attacks.ATTACKS, "planted", attacks.Attack(True, True, False, (), build))
    monkeypatch.setattr(evaluation, "EVALUATION", evaluation.EVALUATION + ("planted",))


def job(model, test_set, name, eps=0.3):
    found = []
    right = evaluation.attack_job(model, test_set, torch.arange(200), name, eps, SETTINGS, "cpu", indicators=found)
    return right, indicators.merge(found)


def test_silent_success_fires_when_an_attack_returns_what_it_did_not_fool(model, test_set, monkeypatch):
    plant(monkeypatch, throws_away)
    right, got = job(model, test_set, "planted")
    clean = evaluation.attack_job(model, test_set, torch.arange(200), "clean", 0.0, SETTINGS, "cpu")
    assert torch.equal(right, clean) and got["silent"] > 50  # PGD at 0.3 fools most; none returned
    lines = indicators.warnings({("planted", 0.3): got}, {("planted", 0.3): 200})
    assert len(lines) == 1 and lines[0][0] is False
    assert lines[0][1].startswith(f"WARNING planted at eps 0.3: silent success on {got['silent']} of 200 images")


def test_still_rising_fires_when_the_last_passes_still_fool(model, test_set, monkeypatch):
    plant(monkeypatch, late)
    _, got = job(model, test_set, "planted")
    assert got["passes"] == 40 and got["silent"] == 0 and got["rising"] > 5
    assert "still fooling new images in its last 10 % of 40 forward passes" in indicators.warnings(
        {("planted", 0.3): got}, {("planted", 0.3): 200})[0][1]
    few = dict(got, rising=2)  # 2 late images of 200: under 1 %, but the floor of 2 is met
    assert len(indicators.warnings({("x", 0.3): few}, {("x", 0.3): 200})) == 1
    assert indicators.warnings({("x", 0.3): few}, {("x", 0.3): 1000}) == []  # under 1 % of 1000
    assert indicators.warnings({("x", 0.3): dict(few, rising=1)}, {("x", 0.3): 50}) == []  # one image: noise


def test_silent_on_apgd_and_pgd_against_a_trained_model(model, test_set):
    for name in ("apgd-ce", "apgd-pm", "feature-pull"):
        _, got = job(model, test_set, name, eps=0.1)
        assert got["silent"] == 0 and got["rising"] == 0 and got["passes"] >= 20, (name, got)


def test_the_watch_changes_nothing_the_attack_computes(model, test_set):
    """The same per-sample results with and without the watch (the cache's entries stay valid)."""
    x, y = test_set.batch(torch.arange(100))
    torch.manual_seed(3)
    plain = attacks.build("apgd-ce", model, 0.1, attacks.Knobs(apgd_steps=10))(x, y)
    torch.manual_seed(3)
    watched = attacks.build("apgd-ce", indicators.Watch(model, x, y, 0.1), 0.1, attacks.Knobs(apgd_steps=10))(x, y)
    assert torch.equal(plain, watched)
