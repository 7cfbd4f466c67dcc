"""Attack saved checkpoints side by side and report robust accuracy honestly: per attack and eps,
with a 95 % interval, the per-sample worst case over every attack, and the sanity checks that
expose gradient masking and attacks too weak to trust.

    python adv_testing.py runs/default/ce_warmup.pt runs/default/final.pt
    python adv_testing.py A.pt B.pt --attacks=released,autoattack --eps=0.05,0.1 --n=1000

The default runs the released notebook's attacks (FGSM, MIM, PGD, SPSA) and AutoAttack's four
(APGD-CE, APGD-T, FAB-T, Square), each as its own row; `worst` is taken over all of them.
Writes OUT (CSV, long form: checkpoint, attack, eps, accuracy, ci_low, ci_high, n), OUT with .md
(the table, the checks, the pairwise comparisons) and .png (accuracy against eps).
"""
import re
import sys

from models import MODEL_NAMES
from robustlib import attacks as registry
from robustlib import evaluation
from robustlib.cli import (ANY_TEXT, BOOL, CSV_FILE, DEVICE_RULE, Rule, check_settings, each, grid_or_auto,
                           interval, one_of, parse_settings, settings_of)
from robustlib.data import DATASETS
from robustlib.errors import UserError, run
from robustlib.evaluation import BUDGETS, EVALUATION

# ---- settings: edit them here, or override any as --name=value (ranges: RANGES below) ------------
ATTACKS = ["released", "autoattack"]  # attack and suite names: ATTACKS and SUITES of attacks.py
#                                    (--budget=standard adds adaptive: BUDGETS)
EPS = "auto"                       # comma list (8/255 allowed); auto: the dataset family's grid
NORM = "linf"                      # the threat model: linf, or l2 (eps are L2 radii; auto: 0.5-2.0 on
#                                    28-px sets, 0.125-0.5 on 32-px; the attacks with an L2 version)
N = 1000                           # test images for the cheap attacks (0: all), a fixed random subset
N_STRONG = 200                     # the first N_STRONG of those get every attack (0: all of them;
#                                    --budget=standard: 1000)
#                                    (clean accuracy is always measured on the whole test set)
BATCH_SIZE = 500                   # images per attack call
STEPS = registry.RELEASED_STEPS    # mim / pgd / bim iterations, step size eps/STEPS (released)
BUDGET = "quick"                   # AutoAttack's budget, a row of BUDGETS: quick (torchattacks' 10
#                                    iterations) or standard (Croce & Hein's 100: every table of record)
# the next four are set by BUDGET (BUDGETS below); a --name=value given too wins (budget "custom")
APGD_STEPS = 10                    # apgd-ce, apgd-t iterations
FAB_STEPS = 10                     # fab-t iterations per target class
SQUARE_QUERIES = 5000              # queries of the Square attack
SQUARE_SCHEDULE = "rescaled"       # Square's p schedule: rescaled to the queries (torchattacks) or reference
APGD_RESTARTS = 1                  # apgd-ce, apgd-t restarts (standard: 1)
FAB_RESTARTS = 1                   # fab-t restarts (standard: 1)
SPSA_ITERS = 1                     # iterations of SPSA, 128 samples each (torchattacks: 1; released: 10)
CW_STEPS = 50                      # iterations of CW-L2
SURROGATE = ""                     # a checkpoint of this project: APGD-CE crafted on it attacks the
#                                    models as the row `transfer` (a black-box row)
LARGE_EPS = 0.5                    # extra PGD run: accuracy must be about 0 there
MODEL = ""                         # for plain state_dict files: a project architecture (models/)
DATASET = ""                       # for files that do not name their dataset (state_dicts, --arch)
ARCH = ""                          # your own model instead: path/to/file.py:Name (a class, or a function returning a module)
ARCH_ARGS = ""                     # keyword arguments of that class: a=1,b=2.5,c=text
DATA_DIR = ""                      # "" : the DATA_DIR the checkpoint was trained with (or ./data)
OUT = "results/adv_testing.csv"    # CSV; the .md table, .png plot, .log and .cache/ go beside it
CACHE = ""                         # the job cache folder; "": OUT's name with .cache. Tables that
#                                    share one reuse each other's finished jobs (keys hold all inputs)
FRESH = False                      # ignore finished jobs in the cache and compute everything again
SEED = 0                           # subset choice and the attacks' random starts
DEVICE = "auto"                    # auto (cuda if present), cpu, cuda ...
CHANNELS_LAST = "auto"             # channels_last memory format (faster on this CPU: bench.py):
#                                    auto: on for this project's models, off for --arch classes
# -------------------------------------------------------------------------------------------------

RANGES = {
    "ATTACKS": each(one_of(*EVALUATION, *registry.SUITES), min_len=1), "EPS": grid_or_auto("(0, inf)"), "NORM": one_of("linf", "l2"),
    "N": interval("[0, inf)", integer=True), "N_STRONG": interval("[0, inf)", integer=True),
    "BATCH_SIZE": interval("[1, inf)", integer=True), "STEPS": interval("[1, inf)", integer=True),
    "BUDGET": one_of(*BUDGETS), "SQUARE_SCHEDULE": one_of("rescaled", "reference"),
    "APGD_STEPS": interval("[1, inf)", integer=True), "APGD_RESTARTS": interval("[1, inf)", integer=True),
    "FAB_STEPS": interval("[1, inf)", integer=True), "FAB_RESTARTS": interval("[1, inf)", integer=True),
    "SQUARE_QUERIES": interval("[1, inf)", integer=True), "SPSA_ITERS": interval("[1, inf)", integer=True),
    "CW_STEPS": interval("[1, inf)", integer=True), "LARGE_EPS": interval("(0, 1]"),
    "MODEL": one_of("", *MODEL_NAMES), "DATASET": one_of("", *DATASETS),
    "ARCH": Rule("empty, or FILE.py:Name", lambda v: v == "" or re.fullmatch(r".+\.py:\w+", v)
                 is not None, ("model.py", "model.py:")),
    "ARCH_ARGS": Rule("empty, or name=value pairs: a=1,b=2", lambda v: v == "" or all(
        re.fullmatch(r"\w+=[^=]*", part.strip()) for part in v.split(",")), ("a", "=1")),
    "SURROGATE": ANY_TEXT, "DATA_DIR": ANY_TEXT, "OUT": CSV_FILE, "CACHE": ANY_TEXT, "FRESH": BOOL,
    "SEED": interval("[0, inf)", integer=True), "DEVICE": DEVICE_RULE,
    "CHANNELS_LAST": one_of("auto", "true", "false"),
}


def settings(argv):
    """(settings, checkpoint paths): these defaults, a BUDGET's values, then the command line; checked."""
    s, paths = parse_settings(settings_of(globals()), argv, BUDGETS, preset_key="BUDGET")
    check_settings(s, RANGES)
    if not paths:
        raise UserError("name at least one checkpoint: python adv_testing.py CKPT [CKPT ...]")
    return s, paths


def main(argv):
    s, paths = settings(argv)
    evaluation.evaluate_checkpoints(s, paths)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
