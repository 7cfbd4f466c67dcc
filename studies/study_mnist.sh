#!/usr/bin/env bash
# The title paper's MNIST figure in its own protocol (GRID=cpu|full|tiny, EPOCHS).
# The study is one definition, "mnist-ssc" in robustlib/studies.py (its settings, runs, tables and write-up);
# robustlib/study.py runs it: SETTING=VALUE arguments or variables (docs: docs/mnist-ssc-protocol.md).
cd "$(dirname "$0")/.." && exec "${PYTHON:-.venv/bin/python}" -m robustlib.study mnist-ssc "$@"
