"""Train a model with cross-entropy (the warm-up the paper requires), then continue from those
weights with PC loss + logit constraints, a fresh optimiser and a fresh schedule.

    python vgg_training.py                                  # the defaults below (offline)
    python vgg_training.py --epochs=20 --loss=ce            # override any constant
    python vgg_training.py --preset=paper-tiny-imagenet     # the released setting
    torchrun --standalone --nproc_per_node=2 vgg_training.py --device=cpu   # DDP

Writes OUT_DIR/ce_warmup.pt, final.pt, last.pt (for RESUME) and log.csv (one row per epoch).
With ADV_TRAIN set, every batch is also attacked (robustlib/training.py: ADV_METHODS, OBJECTIVES):
ALPHA*L(X) + BETA*L(X_adv) for fgsm, fgsm-rs, pgd and mim, TRADES' or MART's own for trades and
mart; + STRUCT_LAMBDA*L_struct (spatial_structure_loss.py).
"""
import sys

from models import MODEL_NAMES
from robustlib import training
from robustlib.cli import (ANY_TEXT, BOOL, DEVICE_RULE, WRITABLE_DIR, check_settings, each, interval, one_of,
                           parse_settings, settings_of)
from robustlib.data import DATASETS
from robustlib.errors import UserError, run
from robustlib.training import ADV_METHODS, LOSSES, SCHEDULES
from spatial_structure_loss import METRICS

# ---- settings: edit them here, or override any as --name=value (ranges: RANGES below) ------------
DATASET = "fashion-mnist"      # mnist fashion-mnist kmnist cifar10 cifar100 svhn tiny-imagenet digits
MODEL = "lenet5"               # lenet5 cnn3 vgg11..vgg19 resnet20..resnet110 vit lenet-classic alexnet resnet18 resnet50
DATA_DIR = "./data"            # datasets are read (or downloaded) here
OUT_DIR = "runs/default"       # checkpoints and log.csv go here
WARMUP_EPOCHS = 4              # phase 1: cross-entropy
EPOCHS = 4                     # phase 2: LOSS, from the warm-up weights, fresh optimiser
LOSS = "pclc"                  # phase 2 loss: pclc (PC + LC_WEIGHT*LC), pc, or ce (the baseline)
MARGIN = 0.995                 # xi of the PC loss (released training value)
LC_WEIGHT = 0.05               # weight of the logit constraints (released value)
BATCH_SIZE = 128               # per process
OPTIMIZER = "adam"             # adam or sgd (with MOMENTUM); each phase starts a fresh one
LR = 1e-3                      # learning rate, each phase starts from it
MOMENTUM = 0.9                 # SGD momentum
SCHEDULE = "multistep"         # learning rate within each phase (SCHEDULES): multistep or cyclic
MILESTONES = [50, 100]         # multistep: epochs where the LR is multiplied by GAMMA (empty: constant)
GAMMA = 0.2                    # multistep factor
WEIGHT_DECAY = 0.0             # weight decay of the optimiser
AUGMENT = True                 # flip/rotate/crop of the 32/64-px sets (never the MNIST family)
ADV_TRAIN = "none"             # none, fgsm, fgsm-rs, fgsm-rs-clamped, pgd, pgd-es, mim, trades, mart (ADV_METHODS)
ADV_EPS = 0.1                  # L-inf radius of the training attack
ADV_STEPS = 5                  # pgd / mim / trades / mart steps
ADV_STEP_SIZE = 0.0            # step size; 0: the method's rule (ADV_METHODS: 1.25 eps for fgsm-rs,
#                                2.5 * ADV_EPS / ADV_STEPS for the iterative ones)
ADV_DECAY = 0.9                # mim momentum decay (gradients normalised per sample)
ALPHA = 1.0                    # weight of L(X) in the weighted objective (the papers' 1 - beta)
BETA = 1.0                     # weight of the robust term: L(X_adv), or TRADES' / MART's beta
COLLAPSE_CHECK = 512           # adversarial training: PGD-10 accuracy on this many fixed training
#                                images each epoch (log.csv), a warning on a collapse (0: off)
STRUCT = "ssc"                 # ssc (spatial structural constraint) or rcc (same-class pairs only)
STRUCT_LAMBDA = 0.0            # weight of the structural term (0: plain adversarial training)
STRUCT_METRIC = "euclidean"    # euclidean, manhattan or cosine
STRUCT_ON = "embedding"        # embedding (penultimate layer) or logits (the released SSC code)
STRUCT_IN_WARMUP = True        # the term in the warm-up too; False: it joins a warmed-up model (RCC's fine-tuning)
SEED = 0                       # seeds weights, shuffling, augmentation and attacks
SHUFFLE = "sampler"            # batch order: sampler (a DistributedSampler seeded by SEED and the epoch,
#                                any number of processes) or loader (torch's DataLoader(shuffle=True),
#                                drawn from the global random stream as the released scripts draw it;
#                                one process, the last partial batch kept)
DEVICE = "auto"                # auto (cuda if present), cpu, cuda, cuda:1 ...
AMP = True                     # bf16 autocast of the training step (its attack too) on CUDA
AMP_CPU = False                # ... and on the CPU (1.5x here: README, bf16 on the CPU)
CHANNELS_LAST = True           # channels_last memory format (faster on this CPU: bench.py)
RESUME = False                 # continue from OUT_DIR/last.pt, exactly where it stopped
OVERWRITE = False              # start afresh in an OUT_DIR that holds another run (its files are removed)
PRESET = ""                    # set by --preset=NAME (see PRESETS)

RANGES = {  # every setting's allowed values, checked before any data or checkpoint is touched
    "DATASET": one_of(*DATASETS), "MODEL": one_of(*MODEL_NAMES), "DATA_DIR": ANY_TEXT,
    "OUT_DIR": WRITABLE_DIR, "WARMUP_EPOCHS": interval("[0, inf)", integer=True),
    "EPOCHS": interval("[0, inf)", integer=True), "LOSS": one_of(*LOSSES),
    "MARGIN": interval("[0, 1]"), "LC_WEIGHT": interval("[0, inf)"),
    "BATCH_SIZE": interval("[1, inf)", integer=True), "OPTIMIZER": one_of("adam", "sgd"),
    "LR": interval("(0, inf)"), "MOMENTUM": interval("[0, 1)"),
    "SCHEDULE": one_of(*SCHEDULES),
    "MILESTONES": each(interval("[1, inf)", integer=True)), "GAMMA": interval("(0, 1]"),
    "WEIGHT_DECAY": interval("[0, inf)"), "AUGMENT": BOOL,
    "ADV_TRAIN": one_of(*ADV_METHODS), "ADV_EPS": interval("(0, 1]"),
    "COLLAPSE_CHECK": interval("[0, inf)", integer=True),
    "ADV_STEPS": interval("[1, inf)", integer=True), "ADV_STEP_SIZE": interval("[0, 1]"),
    "ADV_DECAY": interval("[0, inf)"), "ALPHA": interval("[0, inf)"), "BETA": interval("[0, inf)"),
    "STRUCT": one_of("ssc", "rcc"), "STRUCT_LAMBDA": interval("[0, inf)"),
    "STRUCT_METRIC": one_of(*METRICS), "STRUCT_ON": one_of("embedding", "logits"),
    "STRUCT_IN_WARMUP": BOOL,
    "SEED": interval("[0, inf)", integer=True), "DEVICE": DEVICE_RULE, "AMP": BOOL, "AMP_CPU": BOOL,
    "CHANNELS_LAST": BOOL, "SHUFFLE": one_of("sampler", "loader"), "RESUME": BOOL, "OVERWRITE": BOOL, "PRESET": ANY_TEXT,
}

_PAPER = dict(BATCH_SIZE=256, LR=0.01, MILESTONES=[50, 100], GAMMA=0.2, WARMUP_EPOCHS=150,
              EPOCHS=150, LOSS="pclc", MARGIN=0.995, LC_WEIGHT=0.05, AUGMENT=True)
# the title paper's released script (run_scripts/SSC-DM.py) on Fashion-MNIST with its LeNet:
# SGD 0.01, momentum 0.9, weight decay 1e-3, batch 128, 20 epochs, no schedule, FGSM eps 0.03,
# beta 1 (clean term off), lambda 300, Euclidean distances between the logits, seed 0
_SSC = dict(DATASET="fashion-mnist", MODEL="lenet-classic", OPTIMIZER="sgd", LR=0.01, MOMENTUM=0.9,
            WEIGHT_DECAY=1e-3, BATCH_SIZE=128, WARMUP_EPOCHS=0, EPOCHS=20, MILESTONES=[], LOSS="ce",
            AUGMENT=False, ADV_TRAIN="fgsm", ADV_EPS=0.03, ADV_STEPS=20, ADV_STEP_SIZE=0.0078,
            ADV_DECAY=0.9, ALPHA=0.0, BETA=1.0, STRUCT="ssc", STRUCT_LAMBDA=300.0,
            STRUCT_METRIC="euclidean", STRUCT_ON="logits", SEED=0)
_MNIST_AT = dict(DATASET="mnist", WARMUP_EPOCHS=0, EPOCHS=100, LOSS="ce", AUGMENT=False, OPTIMIZER="sgd",
                 LR=0.01, MOMENTUM=0.9, WEIGHT_DECAY=0.0, BATCH_SIZE=128, SCHEDULE="multistep",
                 MILESTONES=[54, 74, 89], GAMMA=0.1, ADV_EPS=0.3, ADV_STEPS=40, ADV_STEP_SIZE=0.01, ALPHA=0.0,
                 BETA=1.0, STRUCT_LAMBDA=0.0, SHUFFLE="loader")
PRESETS = {
    # the released notebook: VGG-13 on Tiny ImageNet, Adam 0.01, [50, 100] x 0.2, 150 + 150 epochs
    "paper-tiny-imagenet": dict(_PAPER, DATASET="tiny-imagenet", MODEL="vgg13",
                                OUT_DIR="runs/paper-tiny-imagenet"),
    # the paper's probability-gap setting: ResNet-56 on CIFAR-100, same optimiser and schedule
    "paper-cifar100": dict(_PAPER, DATASET="cifar100", MODEL="resnet56",
                           OUT_DIR="runs/paper-cifar100"),
    "ssc-released": dict(_SSC, OUT_DIR="runs/ssc-released"),
    # the follow-up's released train.py: beta 0.5, lambda 15 on the penultimate features, weight
    # decay 1e-4, FGSM eps 0.01; it fine-tunes a trained model, here 4 CE warm-up epochs
    "rcc-released": dict(_SSC, WARMUP_EPOCHS=4, WEIGHT_DECAY=1e-4, ADV_EPS=0.01, ADV_STEPS=10,
                         ALPHA=0.5, BETA=0.5, STRUCT="rcc", STRUCT_LAMBDA=15.0, STRUCT_ON="embedding",
                         OUT_DIR="runs/rcc-released"),
    # the title paper's study of lambda (study.sh): the released settings, lambda = the number,
    # except LeNet-5 (ReLU, max-pool), since the classic LeNet stays at chance under these settings
    # (10.0 % test accuracy after 4 epochs here), and 10 epochs instead of 20 (CPU budget)
    **{f"ssc-lambda-{lam}": dict(_SSC, MODEL="lenet5", EPOCHS=10, STRUCT_LAMBDA=float(lam),
                                 OUT_DIR=f"runs/ssc-lambda-{lam}")
       for lam in (0, 10, 50, 100, 300, 500, 1000)},
    # the title paper's MNIST figure (study_mnist.sh): the released settings on MNIST, the attack, eps
    # and lambda given per point; LeNet-5 (ReLU), since the classic LeNet stays at chance on MNIST
    # under them (11.35 % test accuracy after 2 epochs: results/mnist-ssc-protocol/), 3 epochs (CPU budget)
    "ssc-mnist": dict(_SSC, DATASET="mnist", MODEL="lenet5", EPOCHS=3, OUT_DIR="runs/ssc-mnist"),
    # the field's MNIST baselines at eps 0.3, as published (full budgets; README: baselines)
    # FGSM-RS, Wong, Rice & Kolter (2020): their net, alpha 0.375, 10 epochs, batch 100, Adam, cyclic LR to 5e-3;
    # the released script's batch order and contiguous tensors: on the same CPU a run from seed N is
    # bit for bit train_mnist.py --seed N (README: the field's baselines)
    "fgsm-rs-mnist": dict(_MNIST_AT, MODEL="wong-mnist", ADV_TRAIN="fgsm-rs", ADV_STEP_SIZE=0.375, EPOCHS=10,
                          BATCH_SIZE=100, OPTIMIZER="adam", LR=5e-3, SCHEDULE="cyclic", CHANNELS_LAST=False,
                          OUT_DIR="runs/fgsm-rs-mnist"),
    # PGD-AT as fast_adversarial trains it (MNIST/README.md's Madry setting of train_mnist.py --attack pgd):
    # Wong's net, 40 steps of 0.01 that move only the samples still classified correctly, flat Adam 1e-4,
    # batch 50, 100 epochs
    "pgd-at-wong-mnist": dict(_MNIST_AT, MODEL="wong-mnist", ADV_TRAIN="pgd-es", OPTIMIZER="adam", LR=1e-4,
                              BATCH_SIZE=50, MILESTONES=[], CHANNELS_LAST=False, OUT_DIR="runs/pgd-at-wong-mnist"),
    # TRADES (yaodongyu/TRADES train_trades_mnist.py): SmallCNN, 40 steps of 0.01, beta 1, SGD 0.01
    # momentum 0.9, batch 128, 100 epochs, LR x 0.1 from its epoch 55, 75 and 90 (counted from 1)
    "trades-mnist": dict(_MNIST_AT, MODEL="smallcnn", ADV_TRAIN="trades", BETA=1.0, OUT_DIR="runs/trades-mnist"),
    # PGD-AT (Madry et al. 2018: eps 0.3, 40 steps of 0.01) with TRADES' network and optimiser
    "pgd-at-mnist": dict(_MNIST_AT, MODEL="smallcnn", ADV_TRAIN="pgd", OUT_DIR="runs/pgd-at-mnist"),
    # MART (YisenWang/MART publishes no MNIST setting): TRADES' MNIST budget, MART's beta 6
    "mart-mnist": dict(_MNIST_AT, MODEL="smallcnn", ADV_TRAIN="mart", BETA=6.0, OUT_DIR="runs/mart-mnist"),
}
# -------------------------------------------------------------------------------------------------

def settings(argv):
    """The settings of a run: these defaults, a preset, then the command line; checked."""
    s, extra = parse_settings(settings_of(globals()), argv, PRESETS)
    if extra:
        raise UserError(f"unexpected argument {extra[0]!r}; settings are given as --name=value")
    check_settings(s, RANGES)
    training.check_combination(s)
    return s


def main(argv):
    training.train(settings(argv))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
