"""RESULTS.md is the machine-written record: each study's write-up, run alone on the committed results
(`STAGE=report python -m robustlib.study NAME`), rewrites its sections and files byte for byte. A
change to a write-up's code, or a number edited by hand in RESULTS.md or results/, fails here."""
import filecmp
import os
import shutil

import pytest

from robustlib import study as runner
from robustlib.errors import run
from robustlib.studies import STUDIES


def changed(before, after):
    """Files under `before` whose bytes differ in `after`, or that `after` lacks, and files only in `after`."""
    cmp = filecmp.dircmp(before, after)  # *.cache: the job caches git ignores, absent from a clone
    only = [f for f in cmp.left_only + cmp.right_only if not f.endswith(".cache")]
    edited = [f for f in cmp.common_files if not filecmp.cmp(os.path.join(before, f), os.path.join(after, f), shallow=False)]
    deeper = [os.path.join(d, f) for d in cmp.common_dirs for f in changed(os.path.join(before, d), os.path.join(after, d))]
    return only + edited + deeper


def test_changed_sees_an_edit_a_new_file_and_a_missing_one(tmp_path):
    for side in ("a", "b"):
        (tmp_path / side / "sub").mkdir(parents=True)
        (tmp_path / side / "sub" / "t.md").write_text("| 1 |")
    assert changed(tmp_path / "a", tmp_path / "b") == []
    (tmp_path / "b" / "sub" / "t.md").write_text("| 2 |")
    (tmp_path / "b" / "new.csv").write_text("")
    (tmp_path / "a" / "old.csv").write_text("")
    (tmp_path / "a" / "jobs.cache").write_text("")
    assert sorted(changed(tmp_path / "a", tmp_path / "b")) == ["new.csv", "old.csv", os.path.join("sub", "t.md")]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDIES))
def test_each_study_rewrites_its_sections_byte_for_byte(name, root, tmp_path, monkeypatch):
    for key in {*runner.COMMON, *(k for study in STUDIES.values() for k in study.settings)}:
        monkeypatch.delenv(key, raising=False)  # a setting in the environment would change the write-up
    shutil.copytree(os.path.join(root, "results"), tmp_path / "results", ignore=shutil.ignore_patterns("*.cache"))
    shutil.copytree(os.path.join(root, "Figures"), tmp_path / "Figures")
    shutil.copyfile(os.path.join(root, "RESULTS.md"), tmp_path / "RESULTS.md")
    assert run(runner.main, [name, "STAGE=report", f"STUDY_OUT={tmp_path}"]) == 0
    assert filecmp.cmp(os.path.join(root, "RESULTS.md"), tmp_path / "RESULTS.md", shallow=False)
    assert changed(os.path.join(root, "results"), tmp_path / "results") == []

