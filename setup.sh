#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment in .venv with everything the project needs,
# and Debian's Fashion-MNIST package (the dataset that works offline). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -r requirements.txt
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
echo "setup done: .venv ready, Fashion-MNIST in /usr/share/datasets/fashion-mnist"
