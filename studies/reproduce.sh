#!/usr/bin/env bash
# PC-LC's comparison on Fashion-MNIST and MNIST (DATASETS, FIGURE_EXTRA).
# The study is one definition, "reproduce" in robustlib/studies.py (its settings, runs, tables and write-up);
# robustlib/study.py runs it: SETTING=VALUE arguments or variables (docs: docs/reproduction.md).
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m robustlib.study reproduce "$@"
