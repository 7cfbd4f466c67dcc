"""AutoAttack's two budgets in adv_testing.py: quick (torchattacks' 10 iterations) and standard
(Croce & Hein's reference: 100 iterations, 9 targets, Square on its fixed schedule)."""
import pandas as pd
import torch

import adv_testing
from robustlib import evaluation  # noqa: E402
import vgg_training
from robustlib.cli import parse_settings

DEFAULTS = adv_testing.settings_of(vars(adv_testing))


def settings(*argv, **edits):
    return parse_settings(dict(DEFAULTS, **edits), list(argv), evaluation.BUDGETS, preset_key="BUDGET")[0]


def test_budgets_set_the_reference_values():
    quick, standard = settings(), settings("--budget=standard")
    assert (quick["APGD_STEPS"], quick["FAB_STEPS"], quick["SQUARE_QUERIES"], quick["SQUARE_SCHEDULE"]) == \
        (10, 10, 5000, "rescaled")
    assert (standard["APGD_STEPS"], standard["FAB_STEPS"], standard["SQUARE_QUERIES"],
            standard["SQUARE_SCHEDULE"]) == (100, 100, 5000, "reference")
    assert evaluation.budget_label(quick) == "quick" and evaluation.budget_label(standard) == "standard"
    custom = settings("--apgd_steps=20", "--budget=standard")  # an explicit value wins, wherever it stands
    assert custom["APGD_STEPS"] == 20 and custom["FAB_STEPS"] == 100
    assert evaluation.budget_label(custom) == "custom"
    assert settings(BUDGET="standard")["APGD_STEPS"] == 100  # editing the constant works too
    # the standard budget adds the adaptive suite; attacks given explicitly win and leave the label alone
    assert quick["ATTACKS"] == ["released", "autoattack"] and standard["ATTACKS"] == ["released", "autoattack", "adaptive"]
    chosen = settings("--budget=standard", "--attacks=fgsm")
    assert chosen["ATTACKS"] == ["fgsm"] and evaluation.budget_label(chosen) == "standard"
    # and takes 1,000 images for every attack (the tables of record); fewer given: still the standard budget
    assert quick["N_STRONG"] == 200 and standard["N_STRONG"] == 1000
    fewer = settings("--budget=standard", "--n_strong=300")
    assert fewer["N_STRONG"] == 300 and evaluation.budget_label(fewer) == "standard"
    # the same rule for vgg_training's PRESET constant
    edited = parse_settings(dict(vgg_training.settings_of(vars(vgg_training)), PRESET="ssc-released"), [],
                            vgg_training.PRESETS)[0]
    assert edited["MODEL"] == "lenet-classic" and edited["STRUCT_LAMBDA"] == 300.0


def test_attacks_are_built_with_the_budget():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100))
    for argv, steps, rescaled in (((), 10, True), (("--budget=standard",), 100, False)):
        s = settings(*argv)
        square = evaluation.build_attack("square", model, 0.1, 100, s)
        apgdt = evaluation.build_attack("apgd-t", model, 0.1, 100, s)
        fab = evaluation.build_attack("fab-t", model, 0.1, 100, s)
        assert square.rescale_schedule is rescaled and square.n_queries == 5000
        assert apgdt.steps == steps and fab.steps == steps
        assert apgdt.n_target_classes == 9 and fab.n_target_classes == 9  # also with 100 classes
    # p halves at the reference's query counts, not at twice the pace
    s = settings("--budget=standard")
    square = evaluation.build_attack("square", model, 0.1, 10, s)
    assert [square.p_selection(i) for i in (10, 11, 50, 51, 4000, 4001)] == \
        [0.8, 0.4, 0.4, 0.2, 0.8 / 64, 0.8 / 128]


def test_every_row_and_the_table_say_the_budget(ckpt, tmp_path):
    out = tmp_path / "r.csv"
    args = [ckpt, "--attacks=fgsm,apgd-ce", "--eps=0.1", "--n=40", "--n_strong=20", f"--out={out}"]
    assert adv_testing.main(args) == 0
    quick = pd.read_csv(out)
    assert (quick["budget"] == "quick").all()
    assert out.with_suffix(".md").read_text().startswith("**AutoAttack ran at a reduced budget (quick")
    log_before = len(out.with_suffix(".log").read_text())
    assert adv_testing.main(args + ["--budget=standard"]) == 0
    assert "cached" not in out.with_suffix(".log").read_text()[log_before:]  # nothing reused from quick
    standard = pd.read_csv(out)
    assert (standard["budget"] == "standard").all()
    text = out.with_suffix(".md").read_text()
    assert text.startswith("AutoAttack budget: standard") and "| budget |" in text
    assert "| apgd-ce | 0.1 | 20 | standard |" in text
