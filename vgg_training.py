"""Train a model with cross-entropy (the warm-up the paper requires), then continue from those
weights with PC loss + logit constraints, a fresh optimiser and a fresh schedule.

    python vgg_training.py                                  # the defaults below (offline)
    python vgg_training.py --epochs=20 --loss=ce            # override any constant
    python vgg_training.py --preset=paper-tiny-imagenet     # the released setting
    torchrun --standalone --nproc_per_node=2 vgg_training.py --device=cpu   # DDP

Writes OUT_DIR/ce_warmup.pt, final.pt, last.pt (for RESUME) and log.csv (one row per epoch).
With ADV_TRAIN set, every batch is also attacked and ADV_METHODS says how X_adv is crafted and
which objective of OBJECTIVES forms the loss: ALPHA*L(X) + BETA*L(X_adv) for fgsm, fgsm-rs, pgd
and mim, TRADES' or MART's own for trades and mart; + STRUCT_LAMBDA*L_struct (spatial_structure_loss.py).
"""
import csv
import hashlib
import io
import math
import os
import sys
import time
from collections import namedtuple
from contextlib import nullcontext
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from robustlib import attacks
from adversarial_baselines import mart_objective, trades_objective
from robustlib.checkpoints import atomic_write, load_checkpoint, load_weights, make_dirs, save_checkpoint
from robustlib.cli import (ANY_TEXT, BOOL, DEVICE_RULE, WRITABLE_DIR, check_settings, each, interval, one_of,
                 parse_settings, settings_of)
from robustlib.data import DATASETS, MNIST_FAMILY, augment, dataset_info, get_dataset
from robustlib.errors import RunError, UserError, run
from hard_margin_loss import PCLoss
from margin_loss_soft_logit import LogitConstraintLoss
from robustlib.metrics import evaluate
from models import MODEL_NAMES, build_model
from representation_consistency_loss import RepresentationConsistencyLoss
from robustlib.runtime import start_processes
from spatial_structure_loss import METRICS, SpatialStructureLoss

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

# ADV_TRAIN: the attack of the registry (attacks.py) that crafts X_adv, the step rule (STEP_RULES)
# that sets its step when ADV_STEP_SIZE is 0, and the objective (OBJECTIVES) that forms the loss.
# torchattacks' MIFGSM divides the gradient by its mean absolute value per sample: the released L1
# normalisation up to a constant factor, which the sign step ignores.
AdvMethod = namedtuple("AdvMethod", "attack step_rule objective")
ADV_METHODS = {
    "none": AdvMethod(None, None, "clean"),
    "fgsm": AdvMethod("fgsm", None, "weighted"),
    "fgsm-rs": AdvMethod("fgsm-rs", "wong", "weighted"),  # a uniform start, one step of 1.25 eps
    "fgsm-rs-clamped": AdvMethod("fgsm-rs-clamped", "wong", "weighted"),  # the start clipped first
    "pgd": AdvMethod("pgd", "madry", "weighted"),
    "pgd-es": AdvMethod("pgd-es", "madry", "weighted"),   # fast_adversarial's PGD mode
    "mim": AdvMethod("mim", "madry", "weighted"),
    "trades": AdvMethod("trades", "madry", "trades"),     # TRADES' and MART's own inner attacks
    "mart": AdvMethod("mart", "madry", "mart"),           # (adversarial_baselines.py)
}
# How a batch's loss is formed (ADV_METHODS names the entry): each entry takes the network (its
# forward gives (logits, embedding)), the batch, the attack, the phase's loss L, the structural term
# and the settings, and returns (loss, logits on X, structural term or None).
REPRESENTATION = {"logits": 0, "embedding": 1}  # STRUCT_ON: where L_struct compares X and X_adv


def clean_objective(net, x, y, attack, L, struct_loss, s, autocast):
    """L(X): no attack."""
    with autocast:
        logits, _ = net(x)
        return L(logits, y), logits, None


def adversarial_objective(combine, clean_counts=lambda s: True, clean_again=False):
    """combine(L, z, z_adv, y, s) + STRUCT_LAMBDA * L_struct(r(X), r(X_adv), y), X_adv crafted by the
    attack, r the logits or the embedding (STRUCT_ON). Where neither term depends on X (clean_counts(s)
    false and STRUCT_LAMBDA 0) the forward on X only gives the logged accuracy: it runs in eval mode
    without a graph, after the one on X_adv, so the training step is the released PGD-AT / FGSM-RS one
    (no dropout draws or batch-norm statistics of its own). clean_again: one more train-mode pass on
    X after X_adv's, given to combine as a last argument (TRADES' released order: X, X_adv, X)."""
    def objective(net, x, y, attack, L, struct_loss, s, autocast):
        with autocast:  # the attack's passes too
            x_adv = attack(x, y)
            if clean_counts(s) or s["STRUCT_LAMBDA"] != 0:
                clean, adv = net(x), net(x_adv)
            else:
                adv = net(x_adv)
                net.eval()
                with torch.no_grad():
                    clean = net(x)
                net.train()
            again = (net(x)[0],) if clean_again else ()
            side = REPRESENTATION[s["STRUCT_ON"]]
            structure = struct_loss(clean[side], adv[side], y)
            return combine(L, clean[0], adv[0], y, s, *again) + s["STRUCT_LAMBDA"] * structure, clean[0], structure
    return objective


def weighted(L, z, z_adv, y, s):
    """ALPHA * L(X) + BETA * L(X_adv): the papers' (1 - beta) CE(X) + beta CE(X_adv), with L the phase's loss."""
    return s["ALPHA"] * L(z, y) + s["BETA"] * L(z_adv, y)


def trades(L, z, z_adv, y, s, z_again):
    """TRADES: CE(X) + BETA * KL(p(X) || p(X_adv)) (adversarial_baselines.py), p(X) from the pass on
    X after X_adv's, as train_trades_mnist.py computes it."""
    return trades_objective(z, z_adv, y, beta=s["BETA"], logits_natural_kl=z_again)


def mart(L, z, z_adv, y, s):
    """MART: boosted CE on X_adv + BETA * the misclassification-weighted KL (adversarial_baselines.py)."""
    return mart_objective(z, z_adv, y, beta=s["BETA"])


def pc_plus_lc(margin, lc_weight):
    pc, lc = PCLoss(xi=margin), LogitConstraintLoss()
    return lambda logits, target: pc(logits, target) + lc_weight * lc(logits, target)


# the training losses of a phase (LOSS; the warm-up is always ce), built from MARGIN (the PC loss's
# xi) and LC_WEIGHT: loss(logits, target)
LOSSES = {
    "ce": lambda margin, lc_weight: nn.CrossEntropyLoss(),
    "pc": lambda margin, lc_weight: PCLoss(xi=margin),
    "pclc": pc_plus_lc,
}


OBJECTIVES = {"clean": clean_objective, "weighted": adversarial_objective(weighted, lambda s: s["ALPHA"] != 0),
              "trades": adversarial_objective(trades, clean_again=True), "mart": adversarial_objective(mart)}

# the LR factor at batch t of a phase of `epochs` epochs of `steps` batches (stepped every batch)
SCHEDULES = {
    "multistep": lambda t, steps, epochs, s: s["GAMMA"] ** sum(t // steps >= m for m in s["MILESTONES"]),
    # Wong, Rice & Kolter (2020), as fast_adversarial sets it before batch t: linear from 0 up to LR
    # at epoch 2 * epochs // 5, back to 0 at the end, read at (t + 1) / steps epochs
    "cyclic": lambda t, steps, epochs, s: cyclic((t + 1) / steps, 2 * epochs // 5, epochs),
}


def cyclic(at, peak, end):
    """np.interp(at, [0, peak, end], [0, 1, 0]) (at, peak, end in epochs; peak may be 0)."""
    if at <= peak:
        return at / peak if peak else 1.0
    return max(0.0, (end - at) / (end - peak))

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
# settings that may differ from the stored ones when a run is resumed (EPOCHS extends a run; the
# run's folder and the training data may move, the data's digest is checked); no other one may
MAY_CHANGE_ON_RESUME = ("EPOCHS", "OUT_DIR", "DATA_DIR", "DEVICE", "RESUME", "OVERWRITE")
RUN_FILES = ("ce_warmup.pt", "final.pt", "last.pt", "log.csv")  # what a run writes into OUT_DIR

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

LOG_COLUMNS = ("phase", "epoch", "train_loss", "train_acc", "test_acc", "prob_gap", "lr",
               "seconds", "struct_loss", "train_pgd_acc")


def collapse_probe(train_set, s, device):
    """The fixed training images (COLLAPSE_CHECK of them, chosen by SEED) on which PGD-10 accuracy
    is measured each epoch of adversarial training, or None."""
    if s["ADV_TRAIN"] == "none" or not s["COLLAPSE_CHECK"]:
        return None
    index = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(s["SEED"]))
    return train_set.batch(index[:s["COLLAPSE_CHECK"]], device)


def pgd_accuracy(model, probe, eps, seed):
    """PGD-10 (step eps/4, random start) accuracy on the probe images: single-step training's
    catastrophic overfitting shows as a fall of this number (Wong, Rice & Kolter 2020). The
    training random state is left untouched."""
    x, y = probe
    knobs = attacks.Knobs(steps=10, step=attacks.STEP_RULES["quarter"](eps, 10))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adv = attacks.build("pgd", model, eps, knobs)(x, y)
    model.eval()
    with torch.no_grad():
        return (model(adv).argmax(1) == y).float().mean().item()


def collapsed(best, now, share=0.3):
    """Catastrophic overfitting: the probe's PGD-10 accuracy `now` fell below `share` of its best
    earlier value (none before the first epoch). A small best counts too: FGSM-RS on MNIST that
    overfits from its first epoch never gets far above 1 % (results/mnist-baselines/training/)."""
    return best is not None and now < share * best


def phase_loss(name, margin, lc_weight):
    """The loss of a phase (LOSSES)."""
    return LOSSES[name](margin, lc_weight)


def check_combination(s):
    """Settings that would have no effect in the chosen combination: one line naming both."""
    objective = ADV_METHODS[s["ADV_TRAIN"]].objective
    if s["LOSS"] != "ce" and s["EPOCHS"] and objective in ("trades", "mart"):
        raise UserError(f"--loss={s['LOSS']} has no effect with --adv_train={s['ADV_TRAIN']}: its objective uses "
                        f"its own cross-entropy terms; use --loss=ce")
    if s["STRUCT_LAMBDA"] and objective == "clean":
        raise UserError(f"--struct_lambda={s['STRUCT_LAMBDA']:g} has no effect with --adv_train=none: the "
                        f"structural term compares X with X_adv; set --struct_lambda=0 or choose an --adv_train")


def make_attack(model, num_classes, s):
    """The attack that crafts X_adv from the current model for ADV_TRAIN (always with the model in
    eval mode, back in train mode after), or None."""
    method = ADV_METHODS[s["ADV_TRAIN"]]
    if method.attack is None:
        return None
    rule = attacks.STEP_RULES[method.step_rule] if method.step_rule else None  # fgsm: one step of eps
    step = s["ADV_STEP_SIZE"] or (rule(s["ADV_EPS"], s["ADV_STEPS"]) if rule else 0.0)
    knobs = attacks.Knobs(steps=s["ADV_STEPS"], step=step, decay=s["ADV_DECAY"], classes=num_classes,
                          seed=s["SEED"])
    return attacks.build(method.attack, model, s["ADV_EPS"], knobs)


def make_optimizer(model, s):
    if s["OPTIMIZER"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=s["LR"], momentum=s["MOMENTUM"],
                               weight_decay=s["WEIGHT_DECAY"])
    return torch.optim.Adam(model.parameters(), lr=s["LR"], weight_decay=s["WEIGHT_DECAY"])


def structure_term(s):
    """L_struct(r(X), r(X_adv), y): the spatial structural constraint or its same-class version."""
    if s["STRUCT"] == "rcc":
        return RepresentationConsistencyLoss(s["STRUCT_METRIC"])
    ssc = SpatialStructureLoss(s["STRUCT_METRIC"])
    return lambda rep, rep_adv, target: ssc(rep, rep_adv)


class WithEmbedding(nn.Module):
    """forward(x) -> (logits, embedding) in one pass, so DDP sees the embedding's gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        emb = self.model.embed(x)
        return self.model.head(emb), emb


def train_step(net, batch, criterion, attack, struct_loss, s, autocast):
    """One batch's (loss, logits on X, structural term or None): the objective of OBJECTIVES that
    ADV_METHODS names for ADV_TRAIN."""
    objective = OBJECTIVES[ADV_METHODS[s["ADV_TRAIN"]].objective]
    return objective(net, *batch, attack, criterion, struct_loss, s, autocast)


def weights_digest(model):
    h = hashlib.sha1()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_log(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def prepare_out_dir(s, is_main):
    """OUT_DIR for this run: another run's files there are an error unless RESUME (continue it) or
    OVERWRITE (they are removed first), so no old final.pt can stand beside a new run's files."""
    if s["RESUME"] and s["OVERWRITE"]:
        raise UserError("--resume=true and --overwrite=true contradict each other: choose one")
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(s["OUT_DIR"], f))]
    if found and not (s["RESUME"] or s["OVERWRITE"]):
        raise UserError(f"{s['OUT_DIR']} holds another run's files ({', '.join(found)}): add "
                        f"--resume=true to continue it, or --overwrite=true to replace it")
    if is_main:
        make_dirs(s["OUT_DIR"])
        for name in found if s["OVERWRITE"] else ():
            os.remove(os.path.join(s["OUT_DIR"], name))


def restore(last_path, s, data_digest):
    """The state of a run in progress, checked: a resumable file, made with the same settings
    (except MAY_CHANGE_ON_RESUME) on the same training data. Any mismatch is a one-line error."""
    if not os.path.exists(last_path):
        raise UserError(f"--resume=true but there is nothing to resume: {last_path} does not exist")
    state = load_checkpoint(last_path)
    old = state["meta"]
    if (old["dataset"], old["model"]) != (s["DATASET"], s["MODEL"]):
        raise UserError(f"{last_path}: made for {old['model']} on {old['dataset']}, "
                        f"not {s['MODEL']} on {s['DATASET']}")
    missing = [k for k in ("optimizer", "scheduler", "rng_cpu", "log") if k not in state] + \
              [k for k in ("phase_index", "epoch", "settings") if k not in old]
    if missing:
        raise UserError(f"{last_path} is not a resumable state (it lacks {', '.join(missing)}): "
                        f"resume from the last.pt a run writes, or start afresh with --overwrite=true")
    stored = old["settings"]
    for key, value in s.items():
        if key in stored and key not in MAY_CHANGE_ON_RESUME and stored[key] != value:
            raise UserError(f"--resume=true with --{key.lower()}={value}, but {last_path} was made with "
                            f"{stored[key]}: resume with the stored value, or start a new run")
    if old.get("data_digest", data_digest) != data_digest:
        raise UserError(f"{last_path} was trained on other {s['DATASET']} training data than the one "
                        f"in {s['DATA_DIR']} (their digests differ)")
    return state


def last_good(last_path):
    return (f"{last_path} holds the state before this epoch" if os.path.exists(last_path)
            else "no checkpoint of this run was written yet")


def all_finite(model):
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


class Run(SimpleNamespace):
    """What setup() builds for a run: settings, processes and device, data, model (and `net`, its
    DDP-wrapped view giving (logits, embedding)), attack, losses, the phases and the run's files."""


def training_cast(s, device):
    """bf16 autocast for the training step, its attack included, where AMP asks for it (on CUDA; on
    the CPU with AMP_CPU too), else a context that does nothing. Evaluation stays fp32."""
    on = s["AMP"] and (device.startswith("cuda") or s["AMP_CPU"])
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if on else nullcontext()


def check_processes(s, world):
    if s["SHUFFLE"] == "loader" and world > 1:
        raise UserError(f"SHUFFLE=loader is the order of one process's DataLoader: run it as one process "
                        f"(got {world}), or use SHUFFLE=sampler")


def setup(s):
    """Everything a run needs before its first batch: processes and device (torchrun sets RANK and
    WORLD_SIZE, a plain run is rank 0 of 1), the run's folder, data, model, attack and losses."""
    rank, world, device = start_processes(s["DEVICE"])
    check_processes(s, world)
    is_main = rank == 0
    prepare_out_dir(s, is_main)
    on_cuda = device.startswith("cuda")
    memory_format = torch.channels_last if s["CHANNELS_LAST"] else torch.preserve_format
    train_set = get_dataset(s["DATASET"], train=True, root=s["DATA_DIR"])
    test_set = get_dataset(s["DATASET"], train=False, root=s["DATA_DIR"])
    channels, size, num_classes = dataset_info(s["DATASET"])
    do_augment = s["AUGMENT"] and s["DATASET"] not in MNIST_FAMILY
    torch.manual_seed(s["SEED"])
    model = build_model(s["MODEL"], channels, size, num_classes).to(device, memory_format=memory_format)
    net = WithEmbedding(model)
    if dist.is_initialized():
        net = nn.parallel.DistributedDataParallel(net, device_ids=[torch.device(device)] if on_cuda else None)
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=s["SEED"], drop_last=False)
    meta = dict(dataset=s["DATASET"], model=s["MODEL"], num_classes=num_classes,
                in_channels=channels, image_size=size, settings=s, data_digest=train_set.digest())
    return Run(s=s, rank=rank, world=world, device=device, is_main=is_main,
               say=print if is_main else (lambda *a, **k: None),
               autocast=training_cast(s, device),
               memory_format=memory_format, train_set=train_set, test_set=test_set,
               augment_flip=DATASETS[s["DATASET"]][3] if do_augment else None, model=model, net=net,
               attack=make_attack(model, num_classes, s), probe=collapse_probe(train_set, s, device),
               struct_loss=structure_term(s), sampler=sampler, meta=meta,
               phases=[("warmup", s["WARMUP_EPOCHS"], "ce", s if s["STRUCT_IN_WARMUP"] else dict(s, STRUCT_LAMBDA=0.0)),
                       ("main", s["EPOCHS"], s["LOSS"], s)],  # (name, epochs, loss, the settings its batches see)
               last_path=os.path.join(s["OUT_DIR"], "last.pt"), log_path=os.path.join(s["OUT_DIR"], "log.csv"))


def resume(r):
    """(phase index, epochs done in it, saved state, log rows) from last.pt: weights, random state
    and log restored here, optimiser and schedule when their phase starts."""
    state = restore(r.last_path, r.s, r.meta["data_digest"])
    old = state["meta"]
    load_weights(r.model, state["model"], r.last_path, old)
    torch.set_rng_state(state["rng_cpu"])
    if r.device.startswith("cuda") and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], r.device)
    if r.is_main:  # the rows the state holds are written back, so none can be lost
        write_log(r.log_path, state["log"])
    r.say(f"resuming {r.last_path}: phase {r.phases[old['phase_index']][0]}, {old['epoch']} epochs done")
    return old["phase_index"], old["epoch"], state, state["log"]


def start_phase(r, n_epochs, saved):
    """A fresh optimiser and schedule for a phase of n_epochs (stepped every batch), or those of
    `saved` (last.pt) when the phase is resumed."""
    optimizer = make_optimizer(r.model, r.s)
    steps = batches_per_epoch(r)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: SCHEDULES[r.s["SCHEDULE"]](t, steps, max(n_epochs, 1), r.s))
    if saved is not None:
        try:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        except (KeyError, ValueError) as err:
            raise UserError(f"{r.last_path}: its optimiser state does not fit this run "
                            f"({type(err).__name__}: {err})") from None
    return optimizer, scheduler


def batches_per_epoch(r):
    """SHUFFLE=sampler drops the last partial batch (BatchNorm cannot train on one sample); loader
    keeps it, as DataLoader does."""
    if r.s["SHUFFLE"] == "loader":
        return -(-len(r.train_set) // r.s["BATCH_SIZE"])
    return max(1, len(r.sampler) // r.s["BATCH_SIZE"])


def epoch_batches(r, epoch_id):
    """This process's batches of training-set indices for an epoch, in SHUFFLE's order."""
    if r.s["SHUFFLE"] == "loader":  # the loader's draws from the global stream, made as the released loop makes them
        return list(DataLoader(range(len(r.train_set)), batch_size=r.s["BATCH_SIZE"], shuffle=True))
    r.sampler.set_epoch(epoch_id)
    return torch.tensor(list(iter(r.sampler)), dtype=torch.long).split(r.s["BATCH_SIZE"])[:batches_per_epoch(r)]


def train_epoch(r, where, epoch_id, criterion, optimizer, scheduler, s):
    """One pass over this process's share of the training set: [loss*n, correct, n, structure*n]
    summed over all processes, and the last batch's learning rate. `s`: the phase's settings."""
    batches = epoch_batches(r, epoch_id)
    gen = torch.Generator().manual_seed(r.s["SEED"] * 1_000_003 + epoch_id * 101 + r.rank)
    r.model.train()
    sums = torch.zeros(4, dtype=torch.float64)
    bar = tqdm(batches, desc=where, leave=False, disable=not (r.is_main and sys.stderr.isatty()))
    for b, index in enumerate(bar):
        x, y = r.train_set.batch(index, r.device)
        if r.augment_flip is not None:
            x = augment(x, gen, r.augment_flip)
        x = x.contiguous(memory_format=r.memory_format)
        loss, logits, structure = train_step(r.net, (x, y), criterion, r.attack, r.struct_loss, s, r.autocast)
        if not (torch.isfinite(loss) & torch.isfinite(logits).all()):
            what = f"the loss became {loss.item()}" if not torch.isfinite(loss) else "the logits became non-finite"
            raise RunError(f"{what} in {where}, batch {b + 1}; {last_good(r.last_path)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]  # the rate of this batch (the log shows the last)
        optimizer.step()
        scheduler.step()
        sums += torch.tensor([loss.item() * len(y), (logits.argmax(1) == y).sum().item(), len(y),
                              0.0 if structure is None else structure.item() * len(y)], dtype=torch.float64)
        bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}")
    if dist.is_initialized():  # statistics over all processes
        dist.all_reduce(sums)
    if not all_finite(r.model):  # the epoch's last update can overflow after a finite loss
        raise RunError(f"the weights became non-finite in {where} (its last update); {last_good(r.last_path)}")
    return sums, lr


def epoch_row(r, phase, epoch, n_epochs, sums, lr, seconds, log_rows):
    """The log.csv row of an epoch (test accuracy and probability gap on the whole test set, the
    collapse probe's PGD accuracy), its printed line, and the collapse warning."""
    test_acc, gap = evaluate(r.model, r.test_set, r.device)
    if not math.isfinite(gap):  # finite weights whose outputs overflow (inf - inf in the softmax)
        raise RunError(f"the model's outputs on the test set became non-finite after phase {phase}, epoch {epoch} "
                       f"(the weights are finite but too large); {last_good(r.last_path)}")
    row = dict(phase=phase, epoch=epoch, train_loss=round(sums[0].item() / sums[2].item(), 6),
               train_acc=round(sums[1].item() / sums[2].item(), 6), test_acc=round(test_acc, 6),
               prob_gap=round(gap, 6), lr=lr, seconds=round(seconds, 2),
               struct_loss=float(f"{sums[3].item() / sums[2].item():.6g}") if r.attack else "",
               train_pgd_acc="" if r.probe is None else round(pgd_accuracy(r.model, r.probe, r.s["ADV_EPS"], r.s["SEED"]), 6))
    best = max([x["train_pgd_acc"] for x in log_rows if x.get("train_pgd_acc") not in ("", None)], default=None)
    if r.probe is not None and collapsed(best, row["train_pgd_acc"]):
        r.say(f"WARNING PGD-10 accuracy on {len(r.probe[1])} training images fell to {100 * row['train_pgd_acc']:.1f}% "
              f"(best {100 * best:.1f}%): catastrophic overfitting; stop, or shrink ADV_STEP_SIZE")
    r.say(f"{phase:6s} epoch {epoch:3d}/{n_epochs}  loss {row['train_loss']:.4f}  "
          f"train {100 * row['train_acc']:5.2f}%  test {100 * test_acc:5.2f}%  gap {gap:.3f}  lr {lr:.2g}"
          + (f"  L_s {row['struct_loss']:.4f}" if r.attack else "")
          + (f"  pgd-train {100 * row['train_pgd_acc']:.1f}%" if r.probe is not None else "")
          + f"  {row['seconds']:.1f}s")
    return row


def save_progress(r, phase_index, epoch, optimizer, scheduler, log_rows):
    """last.pt (all a resume needs) and log.csv after an epoch; rank 0 alone writes."""
    if not r.is_main:
        return
    on_cuda = r.device.startswith("cuda")
    save_checkpoint(r.last_path, r.model, dict(r.meta, phase=r.phases[phase_index][0], phase_index=phase_index,
                                               epoch=epoch),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    rng_cpu=torch.get_rng_state(), rng_cuda=torch.cuda.get_rng_state(r.device) if on_cuda else None,
                    log=log_rows)
    write_log(r.log_path, log_rows)


def check_ranks(r):
    """Under torchrun: every rank must hold the same weights. Tear down in step: DDP (and the
    communication work it holds) goes first, then every rank waits for the others before it
    closes its connections, so no rank exits while a peer still talks to it."""
    if not dist.is_initialized():
        return
    digests = [None] * r.world
    dist.all_gather_object(digests, weights_digest(r.model))
    r.net = None
    dist.barrier()
    dist.destroy_process_group()
    if len(set(digests)) != 1:
        raise RunError(f"ranks ended with different weights: {digests}")
    r.say(f"all {r.world} ranks hold identical weights (sha1 {digests[0][:12]})")


def main(argv):
    s, extra = parse_settings(settings_of(globals()), argv, PRESETS)
    if extra:
        raise UserError(f"unexpected argument {extra[0]!r}; settings are given as --name=value")
    check_settings(s, RANGES)
    check_combination(s)
    r = setup(s)
    first_phase, first_epoch, saved, log_rows = resume(r) if s["RESUME"] else (0, 0, None, [])
    epochs_before = [0, s["WARMUP_EPOCHS"]]  # epoch ids run on across phases (shuffling seeds)
    for phase_index in range(first_phase, len(r.phases)):
        phase, n_epochs, loss_name, phase_s = r.phases[phase_index]
        resumed = phase_index == first_phase and saved is not None
        optimizer, scheduler = start_phase(r, n_epochs, saved if resumed else None)
        criterion = phase_loss(loss_name, s["MARGIN"], s["LC_WEIGHT"])
        if n_epochs:
            r.say(f"phase {phase}: {n_epochs} epochs of {loss_name}"
                  + (f" + {s['ADV_TRAIN']} adversarial training, {s['STRUCT']} lambda {phase_s['STRUCT_LAMBDA']}"
                     if r.attack else "") + f", {s['MODEL']} on {s['DATASET']}, {r.device}, {r.world} process(es)")
        for epoch in range(first_epoch if resumed else 0, n_epochs):
            start = time.time()
            sums, lr = train_epoch(r, f"phase {phase}, epoch {epoch + 1}", epochs_before[phase_index] + epoch,
                                   criterion, optimizer, scheduler, phase_s)
            row = epoch_row(r, phase, epoch + 1, n_epochs, sums, lr, time.time() - start, log_rows)
            log_rows.append(row)
            save_progress(r, phase_index, epoch + 1, optimizer, scheduler, log_rows)
        if r.is_main:
            save_checkpoint(os.path.join(s["OUT_DIR"], "ce_warmup.pt" if phase == "warmup" else "final.pt"),
                            r.model, dict(r.meta, phase=phase, phase_index=phase_index, epoch=n_epochs))
    check_ranks(r)
    if r.is_main:
        write_log(r.log_path, log_rows)
    r.say(f"checkpoints and log.csv written to {s['OUT_DIR']}/ (ce_warmup.pt, final.pt, last.pt)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
