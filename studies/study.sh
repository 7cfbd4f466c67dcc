#!/usr/bin/env bash
# The title paper's lambda study on Fashion-MNIST.
# The study is one definition, "lambda-study" in robustlib/studies.py (its settings, runs, tables and write-up);
# robustlib/study.py runs it: SETTING=VALUE arguments or variables (docs: docs/lambda-study.md).
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m robustlib.study lambda-study "$@"
