"""Every script's range table: each setting has a range, a value just outside any bound is one
line naming the setting, its value and the range (exit status 2), and nothing is written."""
import os

import pytest

import adv_testing
import bench
import make_figures
import vgg_training
from cli import CSV_FILE, WRITABLE_DIR, WRITABLE_FILE, run, settings_of

SCRIPTS = {"vgg_training": (vgg_training, "OUT_DIR", "out"), "adv_testing": (adv_testing, "OUT", "r.csv"),
           "make_figures": (make_figures, "OUT_DIR", "figs"), "bench": (bench, "OUT", "b.json")}


def cases():
    for name, (module, _, _) in SCRIPTS.items():
        for key, rule in module.RANGES.items():
            for bad in rule.outside:
                yield name, key, bad


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
    from cli import interval
    closed, open_ = interval("[0, 1]"), interval("(0, 1)")
    assert closed.ok(0) and closed.ok(1.0) and not closed.ok(-1e-9) and not closed.ok(1.0000001)
    assert not open_.ok(0) and not open_.ok(1) and open_.ok(0.5)
    assert not interval("[1, inf)", integer=True).ok(1.5) and not closed.ok(True)
    assert closed.outside == ("-1e-06", "1.000001") and open_.outside == ("0.0", "1.0")
