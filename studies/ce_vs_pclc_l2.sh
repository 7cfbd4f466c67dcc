#!/usr/bin/env bash
# CE against PC + LC in the L2 threat model: seed 0 of ce_vs_pclc.sh's runs (trained if absent) on 500 images (DATASETS, SEEDS, N).
# The study is one definition, "ce-vs-pclc-l2" in robustlib/studies.py (its settings, runs, tables and write-up);
# robustlib/study.py runs it: SETTING=VALUE arguments or variables (docs: docs/reproduction.md).
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m robustlib.study ce-vs-pclc-l2 "$@"
