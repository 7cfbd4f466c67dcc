#!/usr/bin/env bash
# The title paper's lambda study on the offline default (Fashion-MNIST; README: the lambda study):
#   1. train ssc-lambda-{0,10,50,100,300,500,1000} (seed 0): the released settings (SGD 0.01,
#      FGSM eps 0.03, beta 1, Euclidean L_s on the logits) with LeNet-5 for 10 epochs;
#   2. attack them with adv_testing.py's default suite (released + AutoAttack, worst case) at the
#      training eps and twice it; the best lambda > 0 is the one with the highest worst case at 0.03;
#   3. the same-class successor (RCC, lambda 15 on the penultimate features, seed 0), and seeds 1
#      and 2 for lambda 0 and the best lambda, all at equal compute; attack everything;
#   4. write results/ssc-study/ (table, figure) and the study section of RESULTS.md (report.py).
# Runs that already have final.pt are not trained again; finished attacks come from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository
PY=${PYTHON:-.venv/bin/python}
RUNS=runs/study
RES=results/ssc-study
START=$(date +%s)
# a run with final.pt is done; one with last.pt only was interrupted and resumes (same settings)
train() {
  local name=$1; shift
  [ -f "$RUNS/$name/final.pt" ] && return 0
  local resume=false; [ -f "$RUNS/$name/last.pt" ] && resume=true
  $PY vgg_training.py --out_dir="$RUNS/$name" --resume=$resume "$@"
}
attack() { $PY adv_testing.py "$@" --eps=0.03,0.06 --n=1000 --n_strong=200 --budget=standard --out=$RES/robustness.csv; }

LAMBDAS="0 10 50 100 300 500 1000"
for lam in $LAMBDAS; do train lambda-$lam-seed-0 --preset=ssc-lambda-$lam; done
attack $(for lam in $LAMBDAS; do echo $RUNS/lambda-$lam-seed-0/final.pt; done)
BEST=$($PY -m robustlib.report best-lambda "$RES/robustness.csv")
echo "best lambda by the worst case at eps 0.03: $BEST"
train rcc-seed-0 --preset=ssc-lambda-0 --struct=rcc --struct_lambda=15 --struct_on=embedding
for seed in 1 2; do
  train lambda-0-seed-$seed --preset=ssc-lambda-0 --seed=$seed
  train lambda-$BEST-seed-$seed --preset=ssc-lambda-$BEST --seed=$seed
done
attack $(ls -d $RUNS/*/ | sort -V | sed 's|/$|/final.pt|')
END=$(date +%s)

$PY -m robustlib.report study "$RUNS" "$RES" "$BEST" "$((END - START))"
echo "study finished in $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s"
