"""Every script's range table: each setting has a range, a value just outside any bound is one
line naming the setting, its value and the range (exit status 2), and nothing is written."""
import os

import pytest

import adv_testing
from tools import bench
from studies import make_figures
import vgg_training
from robustlib import training  # noqa: E402
from robustlib.cli import CSV_FILE, WRITABLE_DIR, WRITABLE_FILE, settings_of
from robustlib.errors import run

SCRIPTS = {"vgg_training": (vgg_training, "OUT_DIR", "out"), "adv_testing": (adv_testing, "OUT", "r.csv"),
           "make_figures": (make_figures, "OUT_DIR", "figs"), "bench": (bench, "OUT", "b.json")}


# every setting of every script with values just outside its range, as a user would type them,
# written here (not taken from the code under test); [] only for settings that take any text
BAD = {
    "vgg_training": {
        "DATASET": ["imagenet"], "MODEL": ["resnet9"], "DATA_DIR": [], "OUT_DIR": [],  # OUT_DIR: below
        "WARMUP_EPOCHS": ["-1", "1.5"], "EPOCHS": ["-1"], "LOSS": ["focal"], "MARGIN": ["-0.01", "1.01"],
        "LC_WEIGHT": ["-0.1"], "BATCH_SIZE": ["0"], "OPTIMIZER": ["rmsprop"], "LR": ["0", "-1e-3"],
        "MOMENTUM": ["1", "-0.1"], "SCHEDULE": ["cosine"], "MILESTONES": ["0", "a"], "GAMMA": ["0", "1.5"],
        "WEIGHT_DECAY": ["-1"], "AUGMENT": ["maybe"], "ADV_TRAIN": ["cw"], "ADV_EPS": ["0", "1.1"],
        "COLLAPSE_CHECK": ["-1"], "ADV_STEPS": ["0"], "ADV_STEP_SIZE": ["-0.1", "2"], "ADV_DECAY": ["-1"],
        "ALPHA": ["-1"], "BETA": ["-0.5"], "STRUCT": ["l2"], "STRUCT_LAMBDA": ["-1"], "STRUCT_IN_WARMUP": ["later"],
        "STRUCT_METRIC": ["chebyshev"], "STRUCT_ON": ["input"], "SEED": ["-1"], "DEVICE": ["gpu", "cuda:x"],
        "AMP": ["2"], "AMP_CPU": ["no way"], "CHANNELS_LAST": ["yes please"], "SHUFFLE": ["random"], "RESUME": ["sometimes"], "OVERWRITE": ["x"],
        "PRESET": ["no-such-preset"],
    },
    "adv_testing": {
        "ATTACKS": ["deepfool", "fgsm,cw2", ""], "EPS": ["0", "-1", "abc"], "NORM": ["l1"], "N": ["-1"], "N_STRONG": ["-5"],
        "BATCH_SIZE": ["0"], "STEPS": ["0"], "BUDGET": ["plus"], "SQUARE_SCHEDULE": ["fast"],
        "APGD_STEPS": ["0"], "APGD_RESTARTS": ["0"], "FAB_STEPS": ["0"], "FAB_RESTARTS": ["0"],
        "SQUARE_QUERIES": ["0"], "SPSA_ITERS": ["0"], "CW_STEPS": ["0"], "LARGE_EPS": ["0", "1.5"],
        "MODEL": ["resnet9"], "DATASET": ["imagenet"], "ARCH": ["model.py", "model.py:"],
        "ARCH_ARGS": ["a", "=1"], "SURROGATE": [], "DATA_DIR": [], "OUT": ["r.md", "r.png", "r.log", "q.cache"], "CACHE": [],
        "FRESH": ["perhaps"], "SEED": ["-1"], "DEVICE": ["tpu"], "CHANNELS_LAST": ["maybe"],
    },
    "make_figures": {
        "CE": [], "PC": [], "OUT_DIR": [], "N_MOTIVATION": ["0"], "N_TSNE": ["30"], "FGSM_EPS": ["0", "x"],
        "MIM_EPS": ["2"], "TSNE_EPS": ["-0.1", "1.5"], "DATA_DIR": [], "SEED": ["-1"], "DEVICE": ["gpu"],
    },
    "bench": {"REPEATS": ["0"], "OUT": [], "SEED": ["-2"], "ONLY": ["everything", "cpu-bf16,x"]},
}


def cases():
    for name, table in BAD.items():
        for key, values in table.items():
            for bad in values:
                yield name, key, bad


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_table_names_every_setting(name):
    assert set(BAD[name]) == set(SCRIPTS[name][0].RANGES)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_setting_has_a_range(name):
    module = SCRIPTS[name][0]
    assert set(module.RANGES) == set(settings_of(vars(module)))
    for key, value in settings_of(vars(module)).items():
        assert module.RANGES[key].ok(value), (key, value)  # the defaults are in range


@pytest.mark.parametrize("name,key,bad", list(cases()))
def test_value_outside_range_is_one_line(tmp_path, capsys, name, key, bad):
    module, out_key, out_name = SCRIPTS[name]
    out = tmp_path / out_name
    args = [f"--{out_key.lower()}={out}", f"--{key.lower()}={bad}", "missing.pt"]
    if name in ("vgg_training", "make_figures", "bench"):
        args = args[:-1]
    assert run(module.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --" + key.lower() + "=") and err.count("\n") == 1, err
    assert "out of range: allowed" in err or "expected a" in err, err
    assert os.listdir(tmp_path) == []  # nothing written


@pytest.mark.parametrize("name", SCRIPTS)
def test_unwritable_output_is_found_first(tmp_path, capsys, name):
    module, out_key, _ = SCRIPTS[name]
    assert module.RANGES[out_key] in (WRITABLE_DIR, WRITABLE_FILE, CSV_FILE)
    (tmp_path / "blocker").write_text("a file, not a folder")
    target = tmp_path / "blocker" / "inside"
    args = [f"--{out_key.lower()}={target}"] + (["missing.pt"] if name == "adv_testing" else [])
    assert run(module.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --{out_key.lower()}={target} is out of range") and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["blocker"]


def test_interval_rule_bounds():
    from robustlib.cli import interval
    closed, open_ = interval("[0, 1]"), interval("(0, 1)")
    assert closed.ok(0) and closed.ok(1.0) and not closed.ok(-1e-9) and not closed.ok(1.0000001)
    assert not open_.ok(0) and not open_.ok(1) and open_.ok(0.5)
    assert not interval("[1, inf)", integer=True).ok(1.5) and not closed.ok(True)
    assert closed.outside == ("-1e-06", "1.000001") and open_.outside == ("0.0", "1.0")


@pytest.mark.parametrize("args,words", [
    (["--loss=pclc", "--adv_train=trades"], "--loss=pclc has no effect with --adv_train=trades"),
    (["--loss=pc", "--adv_train=mart"], "--loss=pc has no effect with --adv_train=mart"),
    (["--struct_lambda=300", "--adv_train=none"], "--struct_lambda=300 has no effect with --adv_train=none"),
])
def test_a_setting_without_effect_is_one_line(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert run(vgg_training.main, [f"--out_dir={out}", "--dataset=digits", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {words}") and err.count("\n") == 1, err
    assert not out.exists()


def test_combinations_with_effect_pass():
    from robustlib.cli import parse_settings
    for argv in (["--loss=ce", "--adv_train=trades"], ["--loss=pclc", "--adv_train=trades", "--epochs=0"],
                 ["--loss=pclc", "--adv_train=pgd"], ["--struct_lambda=0", "--adv_train=none"],
                 ["--struct_lambda=300", "--adv_train=fgsm"]):
        s, _ = parse_settings(settings_of(vars(vgg_training)), argv, vgg_training.PRESETS)
        training.check_combination(s)
    for name in vgg_training.PRESETS:  # every preset is a combination with effect
        s, _ = parse_settings(settings_of(vars(vgg_training)), [f"--preset={name}"], vgg_training.PRESETS)
        training.check_combination(s)
