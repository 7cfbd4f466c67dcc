#!/usr/bin/env bash
# The title paper's MNIST figure in its own protocol (README: the title paper's MNIST figure):
#   for each point (attack A, eps e, lambda, seed): train LeNet on MNIST with A at e and the released
#   objective (1 - beta) CE(X) + beta CE(X_adv) + lambda L_s on the logits (preset ssc-mnist: SGD 0.01,
#   momentum 0.9, weight decay 1e-3, batch 128, beta 1), then attack it with A at e as released (the
#   paper's number) and with the default suite (released + AutoAttack at --budget=standard: the
#   field's number), on the same test images; then write results/mnist-ssc-protocol/points.csv and
#   Figures/mnist-ssc-protocol.png (report.py).
# GRID=cpu (default): FGSM e in {0.05 .. 0.3} x lambda in {0, 10, 100, 300, 1000}; PGD and MIM e in
#   {0.1, 0.3} x lambda in {0, 300}; seeds 1 and 2 for lambda 0 and 300 at FGSM e = 0.1 and 0.3.
# GRID=full: the paper's grid, e = 0.01 .. 0.3 x lambda in {0, 10, 50, 100, 300, 500, 1000}, all three
#   panels (a GPU's job: DEVICE=cuda). EPOCHS (default 3) is each run's epochs (released: 20).
# Runs with final.pt are not trained again, interrupted ones resume, finished attacks come from the
# cache: rerunning the command does only what is missing. SWEEP_OUT=DIR puts runs/ and results/ there.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository
PY=${PYTHON:-.venv/bin/python}
OUT=${SWEEP_OUT:-.}
RUNS=$OUT/runs/mnist-ssc
RES=$OUT/results/mnist-ssc-protocol
GRID=${GRID:-cpu}
EPOCHS=${EPOCHS:-3}
EXTRA=${EXTRA:-}   # more settings for every training run (tests: --dataset=digits)
ATTACK_EXTRA=${ATTACK_EXTRA:-}   # more settings for every adv_testing.py call
case $GRID in
  cpu)  FGSM_EPS="0.05 0.1 0.15 0.2 0.25 0.3"; FGSM_LAMBDAS="0 10 100 300 1000"
        PANEL_EPS="0.1 0.3"; PANEL_LAMBDAS="0 300"; SEED_EPS="0.1 0.3"; SEED_LAMBDAS="0 300" ;;
  full) FGSM_EPS=$(seq -f %.2f 0.01 0.01 0.30); FGSM_LAMBDAS="0 10 50 100 300 500 1000"
        PANEL_EPS=$FGSM_EPS; PANEL_LAMBDAS=$FGSM_LAMBDAS; SEED_EPS="0.1 0.3"; SEED_LAMBDAS="0 300" ;;
  tiny) FGSM_EPS="0.3"; FGSM_LAMBDAS="0 300"; PANEL_EPS="0.3"; PANEL_LAMBDAS="0"
        SEED_EPS="0.3"; SEED_LAMBDAS="0" ;;   # the tests' grid
  *) echo "error: GRID=$GRID is out of range: allowed cpu, full, tiny" >&2; exit 2 ;;
esac
mkdir -p "$RUNS" "$RES"
START=$(date +%s)

# one point: train it (unless done), its command kept beside it; one line with its time
point() {
  local attack=$1 eps=$2 lam=$3 seed=$4
  local name=$attack-eps$eps-lambda$lam-seed$seed
  local dir=$RUNS/$name
  [ -f "$dir/final.pt" ] && return 0
  local resume=false; [ -f "$dir/last.pt" ] && resume=true
  local args="--preset=ssc-mnist --adv_train=$attack --adv_eps=$eps --struct_lambda=$lam --seed=$seed --epochs=$EPOCHS $EXTRA"
  local t0=$(date +%s)
  $PY vgg_training.py $args --out_dir="$dir" --resume=$resume > "$dir.train.log" 2>&1 || {
    echo "error: training $name failed (its output: $dir.train.log)" >&2; tail -1 "$dir.train.log" >&2; exit 1; }
  echo "python vgg_training.py $args --out_dir=$dir" > "$dir/command.txt"
  echo "$(date '+%H:%M:%S') trained $name in $(( $(date +%s) - t0 )) s"
}
# one panel column: every model trained with attack A at e, attacked together on the same images
attack() {
  local attack=$1 eps=$2; shift 2
  local paper=$attack; [ "$attack" != fgsm ] && paper=ssc-$attack
  local t0=$(date +%s)
  $PY adv_testing.py "$@" --attacks=released,autoattack,$paper --eps=$eps --budget=standard \
      --out=$RES/$attack-eps$eps.csv $ATTACK_EXTRA > "$RES/$attack-eps$eps.out" 2>&1 || {
    echo "error: attacking $attack eps $eps failed (its output: $RES/$attack-eps$eps.out)" >&2; exit 1; }
  echo "$(date '+%H:%M:%S') attacked $# model(s) of $attack eps $eps in $(( $(date +%s) - t0 )) s"
}
column() {  # attack, eps, lambdas, seeds
  local attack=$1 eps=$2 lambdas=$3 seeds=$4 ckpts=()
  for lam in $lambdas; do for seed in $seeds; do
    point "$attack" "$eps" "$lam" "$seed"
    ckpts+=("$RUNS/$attack-eps$eps-lambda$lam-seed$seed/final.pt")
  done; done
  attack "$attack" "$eps" "${ckpts[@]}"
}

for eps in $FGSM_EPS; do
  seeds=0; [[ " $SEED_EPS " == *" $eps "* ]] && seeds="0 1 2"
  # seeds 1 and 2 only for SEED_LAMBDAS: train them, then attack the column with every run of it
  for lam in $FGSM_LAMBDAS; do point fgsm "$eps" "$lam" 0; done
  if [ "$seeds" != 0 ]; then for lam in $SEED_LAMBDAS; do for seed in 1 2; do point fgsm "$eps" "$lam" "$seed"; done; done; fi
  attack fgsm "$eps" $(ls -d "$RUNS"/fgsm-eps"$eps"-lambda*-seed*/ | sort -V | sed 's|/$|/final.pt|')
done
for attack in pgd mim; do
  for eps in $PANEL_EPS; do column "$attack" "$eps" "$PANEL_LAMBDAS" 0; done
done
END=$(date +%s)
$PY -m robustlib.report ssc-points "$RUNS" "$RES" "$OUT/Figures/mnist-ssc-protocol.png" "$((END - START))" "$GRID"
echo "sweep finished in $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s"
