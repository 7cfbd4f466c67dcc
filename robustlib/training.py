"""The training loop of vgg_training.py: the tables of training methods, objectives, losses and
learning-rate schedules, and a run from its settings to its checkpoints (setup, phases, epochs,
resume, checks). vgg_training.py holds the settings a user edits, their ranges and the presets.

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

from adversarial_baselines import mart_objective, trades_objective
from hard_margin_loss import PCLoss
from margin_loss_soft_logit import LogitConstraintLoss
from models import build_model
from representation_consistency_loss import RepresentationConsistencyLoss
from spatial_structure_loss import SpatialStructureLoss

from . import attacks
from .checkpoints import atomic_write, load_checkpoint, load_weights, make_dirs, save_checkpoint
from .data import DATASETS, MNIST_FAMILY, augment, dataset_info, get_dataset
from .errors import RunError, UserError
from .metrics import evaluate
from .runtime import start_processes


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
    "pclc": pc_plus_lc,
    "pc": lambda margin, lc_weight: PCLoss(xi=margin),
    "ce": lambda margin, lc_weight: nn.CrossEntropyLoss(),
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


# settings that may differ from the stored ones when a run is resumed (EPOCHS extends a run; the
# run's folder and the training data may move, the data's digest is checked); no other one may
MAY_CHANGE_ON_RESUME = ("EPOCHS", "OUT_DIR", "DATA_DIR", "DEVICE", "RESUME", "OVERWRITE")
RUN_FILES = ("ce_warmup.pt", "final.pt", "last.pt", "log.csv")  # what a run writes into OUT_DIR

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


def run_phases(r):
    """The warm-up and the main phase, epoch by epoch (from last.pt's place with RESUME): each
    epoch's row in log.csv and last.pt, each phase's checkpoint (ce_warmup.pt, final.pt)."""
    s = r.s
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
            log_rows.append(epoch_row(r, phase, epoch + 1, n_epochs, sums, lr, time.time() - start, log_rows))
            save_progress(r, phase_index, epoch + 1, optimizer, scheduler, log_rows)
        if r.is_main:
            save_checkpoint(os.path.join(s["OUT_DIR"], "ce_warmup.pt" if phase == "warmup" else "final.pt"),
                            r.model, dict(r.meta, phase=phase, phase_index=phase_index, epoch=n_epochs))
    return log_rows


def finish(r, log_rows):
    """Every rank in step (torchrun), the log written once more, the closing line."""
    check_ranks(r)
    if r.is_main:
        write_log(r.log_path, log_rows)
    r.say(f"checkpoints and log.csv written to {r.s['OUT_DIR']}/ (ce_warmup.pt, final.pt, last.pt)")


def train(s):
    """A run of the (checked) settings s, from setup to its checkpoints."""
    r = setup(s)
    finish(r, run_phases(r))
