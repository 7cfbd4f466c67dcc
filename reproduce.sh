#!/usr/bin/env bash
# The whole reproduction on the offline default, LeNet-5 on Fashion-MNIST:
#   1. train CE (16 epochs), CE -> PC + 0.05 LC (8 + 8), and PGD adversarial training without and
#      with the spatial structural constraint (8 epochs each);
#   2. attack every checkpoint with adv_testing.py's defaults (the released attacks and
#      AutoAttack's four, each its own row; worst case; intervals; checks): clean accuracy on all
#      10,000 test images, FGSM/MIM/PGD on 1,000, the costly attacks (SPSA, AutoAttack's) on 200;
#   3. draw the figures into Figures/ and write RESULTS.md (report.py).
# Runs that already have final.pt are not trained again (delete runs/repro to start over).
# REPRO_OUT=DIR writes everything (runs/, results/, Figures/, RESULTS.md) under DIR instead of here.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
OUT=${REPRO_OUT:-.}
RUNS=$OUT/runs/repro
RES=$OUT/results/fashion-mnist-lenet5
FIG=$OUT/Figures
mkdir -p "$FIG"
START=$(date +%s)
# a run with final.pt is done; one with last.pt only was interrupted and resumes (same settings)
train() {
  local name=$1; shift
  [ -f "$RUNS/$name/final.pt" ] && return 0
  local resume=false; [ -f "$RUNS/$name/last.pt" ] && resume=true
  $PY vgg_training.py --out_dir="$RUNS/$name" --resume=$resume "$@"
}

train ce         --loss=ce   --warmup_epochs=8 --epochs=8
train pclc       --loss=pclc --warmup_epochs=8 --epochs=8
train adv        --loss=ce --warmup_epochs=4 --epochs=4 --adv_train=pgd --adv_eps=0.1 --adv_steps=3 --struct_lambda=0
train adv-struct --loss=ce --warmup_epochs=4 --epochs=4 --adv_train=pgd --adv_eps=0.1 --adv_steps=3 --struct_lambda=100
TRAINED=$(date +%s)

$PY adv_testing.py $RUNS/ce/final.pt $RUNS/pclc/final.pt $RUNS/adv/final.pt $RUNS/adv-struct/final.pt \
    --budget=standard --out=$RES/robustness.csv
cp $RES/robustness.png $FIG/fashion-mnist-lenet5-robustness.png
$PY make_figures.py --ce=$RUNS/ce/final.pt --pc=$RUNS/pclc/final.pt --out_dir=$FIG
END=$(date +%s)

$PY report.py reproduce "$RUNS" "$RES" "$OUT" "$((TRAINED - START))" "$((END - START))"
echo "reproduction finished in $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s"
