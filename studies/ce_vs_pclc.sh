#!/usr/bin/env bash
# CE against PC + LC over seeds on 1,000 images, the adaptive suite included (DATASETS, SEEDS, N).
# The study is one definition, "ce-vs-pclc" in robustlib/studies.py (its settings, runs, tables and write-up);
# robustlib/study.py runs it: SETTING=VALUE arguments or variables (docs: docs/reproduction.md).
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m robustlib.study ce-vs-pclc "$@"
