#!/usr/bin/env bash
# The field's adversarial-training baselines on MNIST at eps 0.3, and the papers' methods on top of
# one of them (README: the field's baselines):
#   baselines: FGSM-RS (Wong, Rice & Kolter 2020: preset fgsm-rs-mnist, its full recipe, 3 seeds);
#     PGD-AT, TRADES and MART (presets pgd-at-mnist, trades-mnist, mart-mnist: SmallCNN) at BUDGET's
#     epochs and attack steps, one seed;
#   on top of BASE (pgd-at, the default: SmallCNN at BUDGET; or fgsm-rs, which collapsed in 2 of 3 seeds
#     here), same recipe and budget, SEEDS (default 0 1 2; one seed a sitting on a CPU): PC + LC as the
#     training loss (from the first epoch), SSC (lambda 300 on the logits, Euclidean) and RCC (lambda 15
#     on the features);
#   then adv_testing.py at eps 0.1, 0.2, 0.3 with the default suite at --budget=standard (Croce &
#   Hein's 100 APGD / FAB iterations, Square 5000), the baselines once more at the largest eps with the
#   default quick budget (10 iterations: the budget check), and report.py baselines: results/mnist-baselines/.
# PART=baselines | on-top | all (default) splits the work into two sittings; BUDGET=cpu (default) |
# full (the published epochs and 40 steps of 0.01: a GPU's job) | gpu (the recipe's 40 steps of 0.01
# for GPU_EPOCHS epochs, LR decay at 55 % of them: gpu.sh sizes it to a time limit) | tiny (the tests' grid).
# STAGE=all (default) | train | attack: only the training, or only the tables and the report.
# PARALLEL=true: every run of a stage at once, each its own process (one GPU holds them all).
# Runs with final.pt are not trained again, interrupted ones resume, finished attacks come from the
# one job cache all the tables share (RES/jobs.cache: a model in two tables is attacked once):
# rerunning the command does only what is missing. BASELINES_OUT=DIR writes runs/ and results/ there.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository
PY=${PYTHON:-.venv/bin/python}
OUT=${BASELINES_OUT:-.}
RUNS=$OUT/runs/mnist-baselines
RES=$OUT/results/mnist-baselines
PART=${PART:-all}
BUDGET=${BUDGET:-cpu}
EXTRA=${EXTRA:-}                 # more settings for every training run (tests: --dataset=digits)
ATTACK_EXTRA=${ATTACK_EXTRA:-}   # more settings for every adv_testing.py call
EPS=${EPS:-0.1,0.2,0.3}
BASE=${BASE:-pgd-at}             # the baseline the methods go on top of: pgd-at (SmallCNN) or fgsm-rs
SEEDS_ASKED=${SEEDS:-}           # the seeds of FGSM-RS and of the on-top part (default: BUDGET's)
# SMALLCNN: the settings that scale PGD-AT / TRADES / MART (recipe: 100 epochs, 40 x 0.01, LR x 0.1 at
# 55); WARM: the methods on top of PGD-AT within its epochs, as their papers add them, to a trained
# model: the first half PGD-AT alone (the warm-up: cross-entropy, no structural term), the second
# half with the method, each phase with the recipe's LR decay at about 55 % of it (vgg_training.py
# restarts the schedule at each phase)
case $BUDGET in
  cpu)  SMALLCNN="--epochs=4 --adv_steps=10 --adv_step_size=0 --milestones=3"; SEEDS="0 1 2"
        WARM="--warmup_epochs=2 --epochs=2 --milestones=1" ;;
  full) SMALLCNN=""; SEEDS="0 1 2"; WARM="--warmup_epochs=50 --epochs=50 --milestones=28" ;;
  gpu)  E=${GPU_EPOCHS:-100}; H=$(( E / 2 > 0 ? E / 2 : 1 ))
        SMALLCNN="--epochs=$E --milestones=$(( (E * 55 + 50) / 100 > 0 ? (E * 55 + 50) / 100 : 1 )) ${GPU_EXTRA:-}"
        SEEDS="0 1 2"; WARM="--warmup_epochs=$H --epochs=$H --milestones=$(( (H * 55 + 50) / 100 > 0 ? (H * 55 + 50) / 100 : 1 ))" ;;
  tiny) SMALLCNN="--epochs=1 --adv_steps=2 --adv_step_size=0 --milestones=1"; SEEDS="0"
        WARM="--warmup_epochs=1 --epochs=1 --milestones=1"; EXTRA="--epochs=1 $EXTRA" ;;
  *) echo "error: BUDGET=$BUDGET is out of range: allowed cpu, full, gpu, tiny" >&2; exit 2 ;;
esac
SEEDS_GIVEN=${SEEDS_ASKED:-$SEEDS}
case $PART in all|baselines|on-top) ;; *)
  echo "error: PART=$PART is out of range: allowed all, baselines, on-top" >&2; exit 2 ;;
esac
STAGE=${STAGE:-all}
PARALLEL=${PARALLEL:-false}
case $STAGE in all|train|attack) ;; *)
  echo "error: STAGE=$STAGE is out of range: allowed all, train, attack" >&2; exit 2 ;;
esac
case $PARALLEL in true|false) ;; *)
  echo "error: PARALLEL=$PARALLEL is out of range: allowed true, false" >&2; exit 2 ;;
esac
case $BASE in pgd-at|fgsm-rs) ;; *)
  echo "error: BASE=$BASE is out of range: allowed pgd-at, fgsm-rs" >&2; exit 2 ;;
esac
[[ $SEEDS_GIVEN =~ ^[0-9]+( [0-9]+)*$ ]] || {
  echo "error: SEEDS=$SEEDS_GIVEN is out of range: seeds as whole numbers separated by spaces" >&2; exit 2; }
SEEDS=$SEEDS_GIVEN
declare -A BUDGET_OF=([pgd-at]=$SMALLCNN [fgsm-rs]="")  # BASE's own settings beside its preset
# the methods on top of BASE (report.py: ON_TOP), after BASE's warm-up: half its epochs on PGD-AT,
# none on FGSM-RS (its cyclic schedule would be one cycle per phase: not split; from the first epoch)
declare -A WARM_OF=([pgd-at]=$WARM [fgsm-rs]="")
declare -A ON_TOP=(
  [split]=""   # the control where there is a warm-up: the base in the arms' two phases, no method
  [pclc]="--loss=pclc"
  [ssc]="--struct=ssc --struct_lambda=300 --struct_on=logits --struct_metric=euclidean --struct_in_warmup=false"
  [rcc]="--struct=rcc --struct_lambda=15 --struct_on=embedding --struct_in_warmup=false"
)
mkdir -p "$RUNS" "$RES"
START=$(date +%s)

# one run: train it (unless done), its command kept beside it; one line with its time (NAME may be
# on-BASE/METHOD-seed-N)
train_one() {
  local name=$1; shift
  local dir=$RUNS/$name
  [ -f "$dir/final.pt" ] && return 0
  mkdir -p "$(dirname "$dir")"
  local resume=false; [ -f "$dir/last.pt" ] && resume=true
  local t0=$(date +%s)
  $PY vgg_training.py "$@" $EXTRA --out_dir="$dir" --resume=$resume > "$dir.train.log" 2>&1 || {
    echo "error: training $name failed (its output: $dir.train.log)" >&2; tail -1 "$dir.train.log" >&2; exit 1; }
  echo "python vgg_training.py $* $EXTRA --out_dir=$dir" > "$dir/command.txt"
  echo "$(date '+%H:%M:%S') trained $name in $(( $(date +%s) - t0 )) s"
}
# one table: the given runs attacked together on the same images (TABLE: a path under RES, without
# .csv), at EPS with AutoAttack's BUDGET of adv_testing.py
attack_one() {
  local table=$1 eps=$2 budget=$3; shift 3
  local ckpts=() t0=$(date +%s)
  for name in "$@"; do ckpts+=("$RUNS/$name/final.pt"); done
  mkdir -p "$(dirname "$RES/$table")"
  $PY adv_testing.py "${ckpts[@]}" --eps=$eps --budget=$budget --out=$RES/$table.csv --cache=$RES/jobs.cache \
      $ATTACK_EXTRA \
      > "$RES/$table.out" 2>&1 || {
    echo "error: attacking $table failed (its output: $RES/$table.out)" >&2; exit 1; }
  echo "$(date '+%H:%M:%S') attacked $table ($# models) in $(( $(date +%s) - t0 )) s"
}
# STAGE picks what runs; PARALLEL=true starts each in the background, and `settle` waits for them all
declare -A LAUNCHED=()  # a run named twice (a base in both parts) is trained once
train() {
  [ "$STAGE" != attack ] && [ -z "${LAUNCHED[$1]:-}" ] || return 0
  LAUNCHED[$1]=1
  if [ "$PARALLEL" = true ]; then train_one "$@" & else train_one "$@"; fi
}
attack() { [ "$STAGE" = train ] || { if [ "$PARALLEL" = true ]; then attack_one "$@" & else attack_one "$@"; fi; }; }
settle() {
  local failed=0 pid
  for pid in $(jobs -p); do wait "$pid" || failed=1; done
  [ $failed = 0 ] || { echo "error: a run failed (the lines above name it)" >&2; exit 1; }
}
on_top_arms() {  # the methods on top of BASE (with the control where BASE has a warm-up)
  local arms=(pclc ssc rcc); [ -z "${WARM_OF[$BASE]}" ] || arms+=(split)
  echo "${arms[@]}"
}

if [ "$PART" != on-top ]; then
  train pgd-at-seed-0 --preset=pgd-at-mnist --seed=0 $SMALLCNN
  for method in trades mart; do train $method --preset=$method-mnist $SMALLCNN; done
  for seed in $SEEDS; do train fgsm-rs-seed-$seed --preset=fgsm-rs-mnist --seed=$seed; done
fi
if [ "$PART" != baselines ]; then  # runs in RUNS/on-BASE/ (report: one table per BASE)
  for seed in $SEEDS; do
    train $BASE-seed-$seed --preset=$BASE-mnist --seed=$seed ${BUDGET_OF[$BASE]}
    for method in $(on_top_arms); do
      train on-$BASE/$method-seed-$seed --preset=$BASE-mnist --seed=$seed ${BUDGET_OF[$BASE]} ${WARM_OF[$BASE]} \
        ${ON_TOP[$method]}
    done
  done
fi
settle
if [ "$PART" != on-top ]; then
  attack baselines "$EPS" standard pgd-at-seed-0 trades mart fgsm-rs-seed-0
  # the default (quick: torchattacks' 10 iterations) budget on the same models and images at the
  # largest eps: does it part from the tables' standard budget on robust models? (report: budget check)
  attack quick-budget/baselines "${EPS##*,}" quick pgd-at-seed-0 trades mart fgsm-rs-seed-0
fi
if [ "$PART" != baselines ]; then  # tables in RES/on-BASE/
  for seed in $SEEDS; do
    names=()
    for method in $(on_top_arms); do names+=(on-$BASE/$method-seed-$seed); done
    attack on-$BASE/seed-$seed "$EPS" standard $BASE-seed-$seed "${names[@]}"
  done
fi
settle
[ "$STAGE" != train ] || { echo "trained in $(( $(date +%s) - START )) s (STAGE=train: no tables)"; exit 0; }
# every run's record beside the tables: its epochs (log.csv), its output and its command
mkdir -p "$RES/training"
for dir in "$RUNS"/*/ "$RUNS"/on-*/*/; do
  [ -f "$dir/final.pt" ] || continue
  name=${dir#"$RUNS"/}; name=${name%/}; flat=${name//\//_}
  cp "$dir/log.csv" "$RES/training/$flat.log.csv"
  cp "$dir/command.txt" "$RES/training/$flat.command.txt"
  [ ! -f "$RUNS/$name.train.log" ] || cp "$RUNS/$name.train.log" "$RES/training/$flat.train.log"
done
END=$(date +%s)
$PY -m robustlib.report baselines "$RES" "$((END - START))"
echo "baselines finished in $(( (END - START) / 60 )) min $(( (END - START) % 60 )) s"
