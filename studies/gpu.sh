#!/usr/bin/env bash
# The baselines study (baselines.sh, BUDGET=gpu) on one GPU within a time limit: every run trains at
# once, each its own process (PGD-AT, TRADES, MART on SmallCNN with the recipe's 40 steps of 0.01;
# FGSM-RS at its full recipe; PC + LC, SSC, RCC and the split-schedule control on top of PGD-AT;
# seeds 0 1 2). A probe trains them all together for one epoch at PROBE_STEPS attack steps first;
# from its timings the SmallCNN epochs (at most the recipe's 100) are sized so that the training
# ends within TRAIN_S seconds. Then every table is attacked at once on N test images at EPS
# (--budget=standard, the default suite) for at most ATTACK_S seconds (what finished stays in the
# job cache: rerun with STAGE=attack on any machine to finish it).
#   bash gpu.sh                                          # on a GPU: the sizes below
#   GPU_OUT=/tmp/g PACK=$OUT TRAIN_S=330 bash gpu.sh      # on a lent device: archives into $OUT
# GPU_OUT: where runs/ and results/ go (default: here). GPU_EXTRA: more settings for the SmallCNN
# runs (the tests: fewer attack steps). SEEDS, EXTRA, ATTACK_EXTRA: as baselines.sh's. PACK: a folder for the archives (split at
# 15 MB): runs.tgz.part-* (checkpoints and training records), results.tgz (tables, job cache).
set -euo pipefail
cd "$(dirname "$0")/.."  # the repository
export PYTHON=${PYTHON:-.venv/bin/python}
GPU_OUT=${GPU_OUT:-.}
TRAIN_S=${TRAIN_S:-330}         # the training's wall-clock limit, seconds (the probe not counted)
ATTACK_S=${ATTACK_S:-150}       # the attacks' wall-clock limit, seconds
PROBE_STEPS=${PROBE_STEPS:-4}   # attack steps of the probe's SmallCNN runs (the recipe's: 40)
MAX_EPOCHS=${MAX_EPOCHS:-100}   # the recipe's epochs
N=${N:-1000}
export EPS=${EPS:-0.3}
PACK=${PACK:-}
EXTRA=${EXTRA:-}
[[ $TRAIN_S =~ ^[0-9]+$ && $ATTACK_S =~ ^[0-9]+$ && $PROBE_STEPS =~ ^[1-9][0-9]*$ && $MAX_EPOCHS =~ ^[1-9][0-9]*$ ]] || {
  echo "error: TRAIN_S, ATTACK_S, PROBE_STEPS and MAX_EPOCHS must be whole numbers (PROBE_STEPS, MAX_EPOCHS >= 1)" >&2; exit 2; }
START=$(date +%s)

# 1. the probe: one epoch of every run, all at once, in a scratch folder
probe=$(mktemp -d)
t0=$(date +%s)
STUDY_OUT=$probe BUDGET=gpu GPU_EPOCHS=2 GPU_EXTRA="--adv_steps=$PROBE_STEPS --adv_step_size=0.01" \
  EXTRA="$EXTRA --epochs=1" STAGE=train PARALLEL=true bash studies/baselines.sh | tee "$probe/probe.out"
probe_s=$(( $(date +%s) - t0 ))
# 2. the epochs that fit: per run, (its wall time - its epochs' seconds) is its start and evaluation;
# its seconds per epoch scale with the forward-backward passes per batch (steps + 1)
E=$($PYTHON - "$probe" "$TRAIN_S" "$PROBE_STEPS" "$MAX_EPOCHS" <<'EOF'
import csv, glob, os, re, sys
probe, limit, steps, most = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
walls = dict(re.findall(r"trained (\S+) in (\d+) s", open(os.path.join(probe, "probe.out")).read()))
per_epoch, start = [], []
for name, wall in walls.items():
    rows = list(csv.DictReader(open(os.path.join(probe, "runs", "mnist-baselines", name, "log.csv"))))
    seconds = sum(float(r["seconds"]) for r in rows)
    start.append(float(wall) - seconds)
    if not name.startswith("fgsm-rs"):  # FGSM-RS keeps its recipe's 10 epochs of one step
        per_epoch.append(seconds / len(rows) * 41 / (steps + 1))
fit = int((limit - max(start)) / (max(per_epoch) * 1.1))  # 10 % for the evaluation after each epoch
print(min(most, max(2, fit)))
sys.stderr.write(f"probe: {len(walls)} runs; start + evaluation up to {max(start):.0f} s; slowest SmallCNN "
                 f"epoch at 40 steps {max(per_epoch):.1f} s: {fit} epochs fit in {limit:.0f} s\n")
EOF
)
echo "the SmallCNN runs get $E epochs (probe: $probe_s s)"
mkdir -p "$GPU_OUT/results/mnist-baselines"
echo "GPU_EPOCHS=$E (sized by gpu.sh: TRAIN_S=$TRAIN_S PROBE_STEPS=$PROBE_STEPS, probe $probe_s s)" \
  > "$GPU_OUT/results/mnist-baselines/gpu-plan.txt"

# 3. the training, all runs at once
t0=$(date +%s)
STUDY_OUT=$GPU_OUT BUDGET=gpu GPU_EPOCHS=$E GPU_EXTRA="${GPU_EXTRA:-}" EXTRA="$EXTRA" STAGE=train PARALLEL=true bash studies/baselines.sh
echo "training took $(( $(date +%s) - t0 )) s"
pack() {  # pack NAME PATHS...: a gzipped tar of PATHS (relative to GPU_OUT), split at 15 MB
  [ -n "$PACK" ] || return 0
  local name=$1; shift
  mkdir -p "$PACK"
  tar -czf - -C "$GPU_OUT" "$@" | split -b 15M -d - "$PACK/$name.tgz.part-"
}
list=$(mktemp)
(cd "$GPU_OUT" && find runs/mnist-baselines \( -name final.pt -o -name log.csv -o -name command.txt \
  -o -name '*.train.log' \) -print) > "$list"
pack runs -T "$list"

# 4. the tables, all at once, for at most ATTACK_S seconds
t0=$(date +%s)
status=0
STUDY_OUT=$GPU_OUT BUDGET=gpu GPU_EPOCHS=$E GPU_EXTRA="${GPU_EXTRA:-}" STAGE=attack PARALLEL=true \
  ATTACK_EXTRA="--n=$N --n_strong=$N ${ATTACK_EXTRA:-}" timeout "$ATTACK_S" bash studies/baselines.sh || status=$?
echo "attacks took $(( $(date +%s) - t0 )) s (status $status; 124: stopped at ATTACK_S, finish with STAGE=attack)"
pack results results/mnist-baselines
echo "gpu.sh finished in $(( $(date +%s) - START )) s"
