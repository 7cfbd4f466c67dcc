#!/usr/bin/env bash
# The field's baselines on MNIST and the methods on top (PART, BUDGET, GPU_EPOCHS, GPU_EXTRA, EPS, BASE, SEEDS).
# The study is one definition, "baselines" in robustlib/studies.py (its settings, runs, tables and write-up);
# robustlib/study.py runs it: SETTING=VALUE arguments or variables (docs: docs/baselines.md).
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m robustlib.study baselines "$@"
