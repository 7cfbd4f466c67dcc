#!/usr/bin/env bash
# The whole reproduction on the offline datasets, LeNet-5 on Fashion-MNIST and on MNIST:
#   1. per dataset, train CE (16 epochs), CE -> PC + 0.05 LC (8 + 8), and PGD adversarial training
#      (8 epochs of CE(X) + CE(X_adv), two phases of 4; Fashion-MNIST eps 0.1, 3 steps, also with the
#      spatial structural constraint lambda 100; MNIST eps 0.3, 10 steps);
#   2. attack every checkpoint with adv_testing.py's defaults at --budget=standard (the released
#      attacks and AutoAttack's four, each its own row; worst case; intervals; checks): clean accuracy
#      on all 10,000 test images, FGSM/MIM/PGD on 1,000, the costly attacks (SPSA, AutoAttack's) on 200;
#   3. draw the figures into Figures/ (DATASET-lenet5-*) and write the dataset's section of RESULTS.md
#      (report.py).
# DATASETS="fashion-mnist mnist" (default) picks the datasets. Runs that already have final.pt are not
# trained again and finished attacks come from the job cache (delete runs/repro to start over).
# REPRO_OUT=DIR writes everything (runs/, results/, Figures/, RESULTS.md) under DIR instead of here.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository
PY=${PYTHON:-.venv/bin/python}
OUT=${REPRO_OUT:-.}
DATASETS=${DATASETS:-fashion-mnist mnist}
EXTRA=${EXTRA:-}                 # more settings for every training run (tests: fewer epochs)
ATTACK_EXTRA=${ATTACK_EXTRA:-}   # more settings for adv_testing.py (tests: small budgets)
FIGURE_EXTRA=${FIGURE_EXTRA:-}   # more settings for make_figures.py
FIG=$OUT/Figures
mkdir -p "$FIG"
# a run with final.pt is done; one with last.pt only was interrupted and resumes (same settings)
train() {
  local name=$1; shift
  [ -f "$RUNS/$name/final.pt" ] && return 0
  local resume=false; [ -f "$RUNS/$name/last.pt" ] && resume=true
  $PY vgg_training.py --dataset="$DATASET" --out_dir="$RUNS/$name" --resume=$resume "$@" $EXTRA
}

for DATASET in $DATASETS; do
  case $DATASET in  # the adversarial-training runs of each dataset (report.py: REPRO_RUNS)
    fashion-mnist) ADV="--adv_eps=0.1 --adv_steps=3"; STRUCT_RUN=true ;;
    mnist|digits)  ADV="--adv_eps=0.3 --adv_steps=10"; STRUCT_RUN=false ;;  # digits: the tests' stand-in
    *) echo "error: DATASETS holds $DATASET: allowed fashion-mnist, mnist (digits for tests)" >&2; exit 2 ;;
  esac
  RUNS=$OUT/runs/repro/$DATASET
  RES=$OUT/results/$DATASET-lenet5
  START=$(date +%s)
  train ce   --loss=ce   --warmup_epochs=8 --epochs=8
  train pclc --loss=pclc --warmup_epochs=8 --epochs=8
  train adv  --loss=ce --warmup_epochs=4 --epochs=4 --adv_train=pgd $ADV --struct_lambda=0
  CKPTS="$RUNS/ce/final.pt $RUNS/pclc/final.pt $RUNS/adv/final.pt"
  if $STRUCT_RUN; then
    train adv-struct --loss=ce --warmup_epochs=4 --epochs=4 --adv_train=pgd $ADV --struct_lambda=100
    CKPTS="$CKPTS $RUNS/adv-struct/final.pt"
  fi
  TRAINED=$(date +%s)

  $PY adv_testing.py $CKPTS --budget=standard --out=$RES/robustness.csv $ATTACK_EXTRA
  cp $RES/robustness.png $FIG/$DATASET-lenet5-robustness.png
  $PY studies/make_figures.py --ce=$RUNS/ce/final.pt --pc=$RUNS/pclc/final.pt --out_dir=$FIG $FIGURE_EXTRA
  END=$(date +%s)

  $PY -m robustlib.report reproduce "$DATASET" "$RUNS" "$RES" "$OUT" "$((TRAINED - START))" "$((END - START))"
  echo "reproduction of $DATASET finished in $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s"
done
