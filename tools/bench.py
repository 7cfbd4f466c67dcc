"""What the losses, the training loop and the attacks cost, as ratios measured in the same run.

    python bench.py            # the full measurement (about half an hour on a 2-core CPU, half
                               # of it README command 1 and reproduce.sh, timed from scratch)
    python bench.py --quick    # a smoke run: every figure, few repetitions (used by the tests)

Each figure pairs two ways of doing the same work, alternating them in every repetition after a
warm-up, and reports the median ratio with its spread (min..max over repetitions). Targets are
checked here, never in the test suite; a missed target is printed as MISS and kept in the file.
Writes OUT (JSON) and prints a table.
"""
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
if _ROOT not in sys.path:  # run as a script from its folder: the library and the scripts sit at the root
    sys.path.insert(0, _ROOT)

import torch
from torch import nn

from robustlib.cli import WRITABLE_FILE, check_settings, each, interval, one_of, parse_settings, settings_of
from robustlib.errors import UserError, run

# ---- settings: edit them here, or override any as --name=value ------------------------------
REPEATS = 5                   # measured repetitions of every pair (after one warm-up)
OUT = "results/bench.json"    # where the figures are written
SEED = 0
ONLY = []                     # measure only these groups (GROUPS below; empty: all of them)

GROUPS = ("main-job", "epoch", "speed-choices", "default-suite", "attack-cost", "floor", "loss-cost", "training-step", "input-pipeline",
          "adversarial-training", "cpu-bf16", "sweep-record", "gpu", "reproduce")
RANGES = {"REPEATS": interval("[1, inf)", integer=True), "OUT": WRITABLE_FILE,
          "SEED": interval("[0, inf)", integer=True), "ONLY": each(one_of(*GROUPS))}
# -------------------------------------------------------------------------------------------------


def paired(fn_a, fn_b, repeats):
    """Time fn_a and fn_b alternately; returns medians, and the median and spread of b/a. A
    function that returns a number has timed itself (the part that counts) in seconds."""
    fn_a(), fn_b()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            start = time.perf_counter()
            took = fn()
            acc.append(took if isinstance(took, float) else time.perf_counter() - start)
    ratios = [b / a for a, b in zip(ta, tb)]
    return dict(a_s=statistics.median(ta), b_s=statistics.median(tb), ratio=statistics.median(ratios),
                spread=[min(ratios), max(ratios)], repeats=repeats)


def figure(value, target, kind, what, **extra):
    value = round(value, 4)
    met = value <= target if kind == "max" else value >= target
    return dict(value=value, target=target, target_is=kind, met=met, what=what, **extra)


def loss_cost(repeats, quick):
    from hard_margin_loss import PCLoss
    from margin_loss_soft_logit import LogitConstraintLoss
    ce, pc, lc = nn.CrossEntropyLoss(), PCLoss(), LogitConstraintLoss()
    out = {}
    inner = 20 if quick else 200
    for k in (10, 100, 1000):
        logits = torch.randn(256, k, requires_grad=True)
        y = torch.randint(0, k, (256,))

        def run_ce():
            for _ in range(inner):
                ce(logits, y).backward()

        def run_pclc():
            for _ in range(inner):
                (pc(logits, y) + 0.05 * lc(logits, y)).backward()

        r = paired(run_ce, run_pclc, repeats)
        out[f"loss_cost_k{k}"] = figure(r["ratio"], 2.0, "max",
                                        f"PC+LC forward+backward / CE, batch 256, K={k}", **r,
                                        profile=dict(ce=op_profile(run_ce, inner), pclc=op_profile(run_pclc, inner)))
    return out


def op_profile(fn, calls, top=8):
    """Where the time of fn goes: the `top` operators by self CPU time, microseconds per call
    of the loss (fn makes `calls` of them), and the number of operator calls per loss call."""
    from torch.profiler import profile
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)  # the profiler's own log lines (written by C++ to stderr) are noise here
    try:
        with profile() as prof:
            fn()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return dict(ops_per_call=round(sum(e.count for e in events) / calls, 1),
                top_us_per_call={e.key: round(e.self_cpu_time_total / calls, 1) for e in events[:top]})


def lenet_and_data():
    from robustlib.data import get_dataset
    from models import build_model
    train = get_dataset("fashion-mnist", True, "./data")
    return build_model("lenet5", 1, 28, 10), train


def train_step_cost(repeats, quick):
    import vgg_training
    from robustlib import training
    model, train = lenet_and_data()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = train.batch(torch.arange(128))
    losses = {name: training.phase_loss(name, vgg_training.MARGIN, vgg_training.LC_WEIGHT)
              for name in ("ce", "pclc")}
    steps = 5 if quick else 30

    def steps_with(name):
        def go():
            for _ in range(steps):
                opt.zero_grad()
                losses[name](model(x), y).backward()
                opt.step()
        return go

    r = paired(steps_with("ce"), steps_with("pclc"), repeats)
    return {"train_step": figure(r["ratio"], 1.05, "max",
                                 "LeNet-5 training step on Fashion-MNIST (batch 128), PC+LC / CE", **r)}


ADV_COST_METHODS = {"fgsm-rs": ("fgsm-rs-mnist", 1), "pgd": ("pgd-at-mnist", 10), "trades": ("trades-mnist", 10),
                    "mart": ("mart-mnist", 10)}  # method: (its preset, the attack steps measured)


def adv_settings(preset, steps, model):
    """vgg_training's settings of `preset` with `steps` attack steps (their step rule) and `model`."""
    import vgg_training
    s = dict(settings_of(vars(vgg_training)), **vgg_training.PRESETS[preset])
    return dict(s, MODEL=model, ADV_STEPS=steps, ADV_STEP_SIZE=0.0)


def adv_batches(quick):
    from robustlib.data import get_dataset
    train = get_dataset("mnist", True, "./data")
    return [train.batch(torch.arange(i * 128, (i + 1) * 128)) for i in range(2 if quick else 8)]


def adv_trainer(model_name, s, batches, channels_last=True, cast=None):
    """(net, optimiser, go): a fresh `model_name` and go(), one adversarial-training pass of
    vgg_training.py's objective over `batches` (optimiser step included), under `cast` if given."""
    from robustlib import training
    from models import build_model
    model = build_model(model_name, 1, 28, 10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net, opt = training.WithEmbedding(model), torch.optim.SGD(model.parameters(), 0.01)
    attack, struct = training.make_attack(model, 10, s), training.structure_term(s)
    cast = cast or training.nullcontext()

    def go():
        for x, y in batches:
            opt.zero_grad()  # train_step runs the attack and the objective under `cast`
            loss = training.train_step(net, (x, y), nn.CrossEntropyLoss(), attack, struct, s, cast)[0]
            loss.backward()
            opt.step()
    return net, opt, go


def adv_training_cost(repeats, quick):
    """Per method, on its preset's own model (Wong's net for FGSM-RS, SmallCNN for the others) and
    MNIST batches: one adversarial-training pass over the batches (the objective of vgg_training.py,
    optimiser step included) against (attack steps + 1) plain forward-backward-step passes over the
    same batches."""
    import vgg_training
    batches, out = adv_batches(quick), {}
    for method, (preset, steps) in ADV_COST_METHODS.items():
        model = vgg_training.PRESETS[preset]["MODEL"]
        s = adv_settings(preset, 2 if quick else steps, model)
        net, opt, adversarial = adv_trainer(model, s, batches)
        ce = nn.CrossEntropyLoss()

        def plain():
            for x, y in batches:
                for _ in range(s["ADV_STEPS"] + 1):
                    opt.zero_grad()
                    ce(net(x)[0], y).backward()
                    opt.step()

        r = paired(plain, adversarial, repeats)
        out[f"adv_epoch_{method}"] = figure(
            r["ratio"], 1.15, "max", f"{model} MNIST, {method} ({s['ADV_STEPS']} attack steps, {preset}'s objective): "
            f"adversarial-training pass / (steps + 1) plain forward-backward passes on the same batches", **r)
    return out


def bf16_cost(repeats, quick):
    """CPU bf16 autocast + channels_last against fp32 (contiguous) for a PGD adversarial-training step
    (10 steps) of LeNet-5 and of SmallCNN on MNIST batches: fp32 time / bf16 time."""
    batches, out = adv_batches(quick)[:1], {}
    for model_name in ("lenet5", "smallcnn"):
        s = adv_settings("pgd-at-mnist", 2 if quick else 10, model_name)
        bf16 = adv_trainer(model_name, s, batches, cast=torch.autocast("cpu", dtype=torch.bfloat16))[2]
        fp32 = adv_trainer(model_name, s, batches, channels_last=False)[2]
        r = paired(bf16, fp32, repeats)
        out[f"cpu_bf16_{model_name}"] = figure(
            r["ratio"], 1.2, "min", f"{model_name} PGD-{s['ADV_STEPS']} adversarial-training step on MNIST (batch 128): "
            "fp32 / bf16 autocast + channels_last time on this CPU (training adopts bf16 at >= 1.2x)", **r)
    return out


def sweep_record():
    """study_mnist.sh's last full grid, from report.py's record (timing.json: the points' epoch times
    and the attack jobs' times summed; process start-up not counted): its minutes and points per
    CPU-hour (not re-run here: two hours)."""
    path = os.path.join(_ROOT, "results", "mnist-ssc-protocol", "timing.json")
    if not os.path.exists(path):
        none = dict(value=None, target=None, met=None, what=f"study_mnist.sh: no record ({path} missing)")
        return {"sweep_minutes": none, "sweep_points_per_cpu_hour": dict(none)}
    with open(path) as f:
        t = json.load(f)
    work_s = t["train_s"] + t["attack_s"]
    what = (f"bash study_mnist.sh (GRID={t['grid']}, {t['points']} points, {t['cores']} cores; training "
            f"{t['train_s'] / 60:.0f} min + attacks {t['attack_s'] / 60:.0f} min), recorded {t['date']}")
    return {"sweep_minutes": dict(value=round(work_s / 60, 1), target=None, met=None, what=f"{what}: minutes"),
            "sweep_points_per_cpu_hour": dict(value=round(t["points"] / (work_s / 3600 * t["cores"]), 2), target=None,
                                              met=None, what=f"{what}: points per CPU-hour")}


def torchvision_fashion_mnist(root):
    """torchvision's FashionMNIST (ToTensor) on Debian's files, decompressed into root (torchvision
    reads the raw IDX files)."""
    import gzip
    from torchvision import datasets, transforms
    from robustlib.data import DEBIAN_FASHION_MNIST
    raw = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(raw)
    for name in os.listdir(DEBIAN_FASHION_MNIST):
        with gzip.open(os.path.join(DEBIAN_FASHION_MNIST, name)) as src, \
                open(os.path.join(raw, name[:-3]), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return datasets.FashionMNIST(root, train=True, transform=transforms.ToTensor(), download=False)


def pipeline_cost(repeats, quick):
    """The project's in-memory data path vs torchvision's standard per-sample pipeline, and vs
    pure compute on batches already in memory: the same model, batch size and step count."""
    from torch.utils.data import DataLoader
    model, train = lenet_and_data()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    steps = 30 if quick else len(train) // 128
    root = tempfile.mkdtemp(prefix="bench-fmnist-")
    tv_set = torchvision_fashion_mnist(root)

    def step(x, y):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    def ours():
        order = torch.randperm(len(train))
        for index in order.split(128)[:steps]:
            step(*train.batch(index))

    ready = [train.batch(i) for i in torch.randperm(len(train)).split(128)[:steps]]

    def compute_only():
        for x, y in ready:
            step(x, y)

    def torchvision_with(workers):
        def go():
            loader = DataLoader(tv_set, batch_size=128, shuffle=True, num_workers=workers)
            for i, (x, y) in enumerate(loader):
                if i == steps:
                    break
                step(x, y)
        return go

    tv = {w: paired(ours, torchvision_with(w), max(1, repeats // 2)) for w in (0, 2)}
    vs_compute = paired(compute_only, ours, repeats)
    shutil.rmtree(root)
    return pipeline_figures(steps, tv, vs_compute)


def pipeline_figures(steps, tv, vs_compute):
    """The two pipeline figures: against torchvision's loader (its faster worker count) and
    against compute alone."""
    best = min(tv, key=lambda w: tv[w]["b_s"])
    vs_tv = tv[best]
    return {
        "pipeline_vs_torchvision": figure(
            1 / vs_tv["ratio"], 0.6, "max",
            f"{steps} LeNet-5 steps fed by data.py / by torchvision FashionMNIST+ToTensor+DataLoader "
            f"(best of 0 and 2 workers: {best})", ours_s=vs_tv["a_s"], torchvision_s=vs_tv["b_s"],
            spread=[1 / vs_tv["spread"][1], 1 / vs_tv["spread"][0]],
            torchvision_s_by_workers={w: tv[w]["b_s"] for w in tv}),
        "pipeline_vs_compute": figure(
            vs_compute["ratio"], 1.1, "max",
            f"{steps} LeNet-5 steps fed by data.py / the same steps on batches already in memory",
            compute_s=vs_compute["a_s"], ours_s=vs_compute["b_s"], spread=vs_compute["spread"]),
    }


def epoch_cost(repeats, quick, out):
    """One LeNet-5 epoch as vgg_training.py runs it (the seconds its log gives: the steps and the
    test-set evaluation) against a plain eager loop of the same work in the default memory layout:
    same model, batches, Adam, cross-entropy, evaluation. Leaves a trained checkpoint in `out`."""
    import contextlib
    import io
    import pandas as pd
    import vgg_training
    from robustlib.data import get_dataset
    from robustlib.metrics import evaluate
    from models import build_model
    dataset = "digits" if quick else "fashion-mnist"
    train, test = get_dataset(dataset, True, "./data"), get_dataset(dataset, False, "./data")

    def project():
        with contextlib.redirect_stdout(io.StringIO()):
            vgg_training.main([f"--dataset={dataset}", "--warmup_epochs=1", "--epochs=0", f"--out_dir={out}",
                               "--overwrite=true"])
        return float(pd.read_csv(os.path.join(out, "log.csv")).seconds.iloc[-1])

    def plain():
        torch.manual_seed(torch.initial_seed())  # the same weights each repeat: main's --seed
        model = build_model("lenet5", 1, 28, 10)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        start = time.perf_counter()
        model.train()
        for index in torch.randperm(len(train)).split(128):
            x, y = train.batch(index)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        evaluate(model, test, "cpu")
        return time.perf_counter() - start

    r = paired(plain, project, repeats)
    return {"epoch_vs_plain": figure(
        r["ratio"], 0.75, "max", f"LeNet-5 {dataset} epoch (CE, batch 128, Adam, + test evaluation): "
        f"vgg_training.py / a plain eager loop in the default layout", project_s=r["b_s"],
        plain_s=r["a_s"], spread=r["spread"])}


def trained_lenet(ckpt):
    from robustlib.checkpoints import load_checkpoint, model_from_checkpoint
    return model_from_checkpoint(load_checkpoint(ckpt)).eval()


def _layout(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def pgd_run(ckpt, test, index, s, layout, threads=None, batch=None):
    """A function that runs adv_testing's PGD-10 at eps 0.1 on `index` in a layout, with a number
    of threads and a BATCH_SIZE."""
    from robustlib import evaluation
    settings = dict(s, CHANNELS_LAST=layout, BATCH_SIZE=batch or s["BATCH_SIZE"])
    net = trained_lenet(ckpt).to(memory_format=_layout(layout))

    def go():
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            evaluation.run_attacks(net, test, index, ["pgd"], [0.1], settings, "cpu")
        finally:
            torch.set_num_threads(before)
    return go


def train_steps_run(ckpt, test, layout, quick):
    """A function that runs PC + LC training steps of LeNet-5 (batch 128) in a layout."""
    import vgg_training
    from robustlib import training
    net = trained_lenet(ckpt).train().to(memory_format=_layout(layout))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss = training.phase_loss("pclc", vgg_training.MARGIN, vgg_training.LC_WEIGHT)
    x, y = test.batch(torch.arange(128))
    x = x.contiguous(memory_format=_layout(layout))

    def go():
        for _ in range(5 if quick else 30):
            opt.zero_grad(set_to_none=True)
            loss(net(x), y).backward()
            opt.step()
    return go


def layout_choices(repeats, quick, ckpt):
    """The speed choices the scripts make, each against its alternative (speed-up: > 1 means
    the choice is faster): channels_last for a training step and for PGD-10, all cores against
    one thread, and adv_testing's BATCH_SIZE against half and twice it."""
    import adv_testing
    from robustlib.data import get_dataset
    test = get_dataset("digits" if quick else "fashion-mnist", False, "./data")
    n = 200 if quick else 1000
    s = adv_testing.settings_of(vars(adv_testing))
    index = torch.arange(n)

    def pgd(layout, threads=None, batch=None):
        return pgd_run(ckpt, test, index, s, layout, threads, batch)

    def step(layout):
        return train_steps_run(ckpt, test, layout, quick)

    out = {}
    r = paired(step(True), step(False), repeats)
    out["choice_train_channels_last"] = figure(r["ratio"], 1.0, "min", "LeNet-5 PC+LC training step "
                                               "(batch 128): contiguous / channels_last time", spread=r["spread"])
    r = paired(pgd(True), pgd(False), repeats)
    out["choice_attack_channels_last"] = figure(r["ratio"], 1.0, "min", f"PGD-10 on {n} images: "
                                                "contiguous / channels_last time", spread=r["spread"])
    if os.cpu_count() > 1:
        r = paired(pgd(True), pgd(True, threads=1), repeats)
        out["choice_attack_threads"] = figure(r["ratio"], 1.0, "min", f"PGD-10 on {n} images: one thread / "
                                              f"torch's default ({torch.get_num_threads()} threads) time",
                                              spread=r["spread"])
    batch = s["BATCH_SIZE"]
    ratios = {}
    for other in (batch // 2, batch * 2):
        ratios[other] = paired(pgd(True), pgd(True, batch=other), repeats)
    worst = min(ratios, key=lambda b: ratios[b]["ratio"])
    out["choice_attack_batch"] = figure(
        ratios[worst]["ratio"], 0.95, "min", f"PGD-10 on {n} images: BATCH_SIZE {batch} against "
        f"{batch // 2} and {batch * 2} (the faster alternative's time / the default's)",
        by_batch={b: round(r["ratio"], 4) for b, r in ratios.items()}, spread=ratios[worst]["spread"])
    return out


def suite_cost(repeats, quick, ckpt):
    """adv_testing.py's default suite (one eps) against a bare loop that calls the same
    torchattacks constructors on every image in the default layout and scores the result."""
    import adv_testing
    from robustlib import evaluation
    from robustlib.data import get_dataset
    test = get_dataset("digits" if quick else "fashion-mnist", False, "./data")
    n, eps = (40, 0.05) if quick else (200, 0.05)
    s = dict(adv_testing.settings_of(vars(adv_testing)), CHANNELS_LAST=True)  # as main() sets it
    if quick:
        s.update(SQUARE_QUERIES=100)
    attacks = evaluation.expand(s["ATTACKS"])
    index = torch.arange(n)
    plain_model = trained_lenet(ckpt)
    fast_model = trained_lenet(ckpt).to(memory_format=torch.channels_last)

    def ours():
        evaluation.run_attacks(fast_model, test, index, attacks, [eps], s, "cpu")

    def bare():
        for name in attacks:
            attack = evaluation.build_attack(name, plain_model, eps, test.num_classes, s)
            for number, chunk in enumerate(index.split(s["BATCH_SIZE"])):
                torch.manual_seed(number)
                x, y = test.batch(chunk)
                adv = attack(x, y)
                with torch.no_grad():
                    (plain_model(adv).argmax(1) == y).sum()

    r = paired(bare, ours, repeats)
    return {"suite_vs_bare": figure(
        1 / r["ratio"], 0.95, "min", f"the default suite ({', '.join(attacks)}) at eps {eps} on {n} "
        "images: adv_testing.py images/s / a bare torchattacks loop's", ours_s=r["b_s"], bare_s=r["a_s"],
        spread=[1 / r["spread"][1], 1 / r["spread"][0]])}


def attack_cost(repeats, quick, ckpt):
    """Each attack of AutoAttack's standard version and of the adaptive suite alone, at the standard
    budget, on the same images of the epoch's LeNet-5 at eps 0.05 (as adv_testing.py runs one job):
    milliseconds per image each, and the adaptive suite's total against AutoAttack's (what the
    standard budget's adaptive rows add)."""
    import adv_testing
    from robustlib import attacks, evaluation
    from robustlib.data import get_dataset
    test = get_dataset("digits" if quick else "fashion-mnist", False, "./data")
    n, eps = (20, 0.05) if quick else (200, 0.05)
    s = dict(adv_testing.settings_of(vars(adv_testing)), CHANNELS_LAST=True)
    s.update({k: v for k, v in evaluation.BUDGETS["standard"].items() if k != "ATTACKS"})
    if quick:
        s.update(APGD_STEPS=5, FAB_STEPS=5, SQUARE_QUERIES=50)
    model, index = trained_lenet(ckpt).to(memory_format=torch.channels_last), torch.arange(n)
    groups = {"autoattack": attacks.SUITES["autoattack"], "adaptive": attacks.SUITES["adaptive"]}
    times = {name: [] for names in groups.values() for name in names}
    for _ in range(repeats):
        for name in times:
            start = time.perf_counter()
            evaluation.attack_job(model, test, index, name, eps, s, "cpu")
            times[name].append(time.perf_counter() - start)
    per_image = {name: 1000 * statistics.median(t) / n for name, t in times.items()}
    total = {g: sum(per_image[a] for a in names) for g, names in groups.items()}
    return {"adaptive_vs_autoattack": dict(
        value=round(total["adaptive"] / total["autoattack"], 4), target=None, met=None,
        what=f"the adaptive suite's cost per image / AutoAttack's (standard budget, LeNet-5, eps {eps}, {n} images)",
        ms_per_image={k: round(v, 2) for k, v in per_image.items()}, autoattack_ms=round(total["autoattack"], 2),
        adaptive_ms=round(total["adaptive"], 2))}


def floor_cost(repeats, quick):
    """The attack step near the CPU's floor: one forward pass and the gradient with respect to the
    input (what every attack iteration does) of SmallCNN and LeNet-5 on MNIST-sized images (batch
    500, fp32, channels_last as adv_testing.py runs them), in GFLOP/s of the operations it counts
    (torch's FlopCounterMode), against the same run's torch.mm on float32 matrices of 1024; where
    the step's time goes (its operators). Measured here and not taken: torch.compile of the model
    (slower than eager for SmallCNN's step, 0.19 against 0.29 of sgemm, one thread beside a job)."""
    from torch.utils.flop_counter import FlopCounterMode
    from models import build_model
    size, batch = (256, 50) if quick else (1024, 500)
    a, b = torch.randn(size, size), torch.randn(size, size)
    result = {}
    for name, target in (("smallcnn", 0.6), ("lenet5", 0.3)):
        model = build_model(name, 1, 28, 10).eval().to(memory_format=torch.channels_last).requires_grad_(False)
        x = torch.rand(batch, 1, 28, 28).to(memory_format=torch.channels_last).requires_grad_(True)
        y = torch.randint(0, 10, (batch,))

        def step():  # the weights need no gradient: the input's alone, as an attack computes it
            x.grad = None
            nn.functional.cross_entropy(model(x), y).backward()
        with FlopCounterMode(display=False) as counter:
            step()
        r = paired(lambda: torch.mm(a, b), step, repeats)
        mm_gflops, step_gflops = 2 * size ** 3 / r["a_s"] / 1e9, counter.get_total_flops() / r["b_s"] / 1e9
        result[f"attack_step_vs_sgemm_{name}"] = figure(
            step_gflops / mm_gflops, target, "min", f"{name} attack step (forward + input gradient, batch {batch}) "
            f"GFLOP/s / torch.mm's ({size}^2 fp32) in the same run", step_gflops=round(step_gflops, 2),
            sgemm_gflops=round(mm_gflops, 2), where=op_profile(step, 1))  # where the floor is lost
    return result


def main_job(quick):
    """README command 1 after set-up: the default training run, then adv_testing.py's default suite
    on its two checkpoints (all 10,000 test images; the costly attacks on N_STRONG of them),
    timed; and the peak resident memory of those processes."""
    train_args = ["--dataset=digits", "--warmup_epochs=1", "--epochs=1"] if quick else []
    attack_args = ["--eps=0.1", "--n=60", "--n_strong=20", "--square_queries=50"] if quick else []
    here = _ROOT
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "vgg_training.py", f"--out_dir={out}", *train_args], check=True,
                       capture_output=True, cwd=here)
        trained = time.perf_counter()
        subprocess.run([sys.executable, "adv_testing.py", f"{out}/ce_warmup.pt", f"{out}/final.pt",
                        f"--out={out}/r.csv", *attack_args], check=True, capture_output=True, cwd=here)
        done = time.perf_counter()
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        # the same job list at AutoAttack's standard budget (every table of record uses it)
        subprocess.run([sys.executable, "adv_testing.py", f"{out}/ce_warmup.pt", f"{out}/final.pt",
                        f"--out={out}/standard.csv", "--budget=standard", *attack_args], check=True,
                       capture_output=True, cwd=here)
        standard = time.perf_counter() - done
    what = "a 1+1 epoch digits run and a small attack" if quick else "README command 1 after set-up"
    result = {
        "main_job_minutes": figure(
            (done - start) / 60, 3.0, "max", f"{what}, minutes on {os.cpu_count()} cores "
            f"(training {trained - start:.0f} s, adv_testing {done - trained:.0f} s)",
            train_s=round(trained - start, 1), attack_s=round(done - trained, 1)),
        "memory_train_rss_mib": dict(value=round(peak_mib, 1), target=None, met=None,
                                     what=f"peak resident memory of {what}"),
        "budget_standard_vs_quick": dict(
            value=round(standard / (done - trained), 3), target=None, met=None,
            what=f"adv_testing.py on {what}'s checkpoints: --budget=standard / quick wall time "
                 f"({standard:.0f} s / {done - trained:.0f} s)", standard_s=round(standard, 1),
            quick_s=round(done - trained, 1))}
    result["memory_gpu_mib"] = dict(value=None, target=None, met=None,
                                    what="peak GPU memory: no CUDA device in this run") \
        if not torch.cuda.is_available() else gpu_memory()
    return result


def reproduce_job(quick):
    """bash reproduce.sh's Fashion-MNIST part from scratch into a temporary folder (STUDY_OUT), timed."""
    if quick:
        return {"reproduce_minutes": dict(value=None, target=15.0, target_is="max", met=None,
                                          what="bash reproduce.sh: skipped in --quick")}
    here = _ROOT
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(["bash", "studies/reproduce.sh"], check=True, capture_output=True, cwd=here,
                       env=dict(os.environ, STUDY_OUT=out, PYTHON=sys.executable, DATASETS="fashion-mnist"))
        took = time.perf_counter() - start
    return {"reproduce_minutes": figure(took / 60, 15.0, "max", f"DATASETS=fashion-mnist bash reproduce.sh from scratch (4 trainings, "
                                        f"the default suite on 4 checkpoints, figures), minutes on {os.cpu_count()} cores")}


def gpu_memory():
    torch.cuda.reset_peak_memory_stats()
    model, train = lenet_and_data()
    model = model.cuda()
    x, y = train.batch(torch.arange(128), "cuda")
    nn.CrossEntropyLoss()(model(x), y).backward()
    return dict(value=round(torch.cuda.max_memory_allocated() / 2 ** 20, 1), target=None, met=None,
                what="peak GPU memory of a LeNet-5 training step, batch 128")


def gpu_speed(repeats, quick):
    if not torch.cuda.is_available():
        return {"gpu_bf16_channels_last": dict(value=None, target=1.5, target_is="min", met=None,
                                               what="VGG-13 32 px, bf16 autocast + channels_last vs "
                                                    "fp32: skipped, no CUDA device in this run")}
    from models import build_model
    batch = 256
    x, y = torch.rand(batch, 3, 32, 32, device="cuda"), torch.randint(0, 10, (batch,), device="cuda")
    fp32 = build_model("vgg13", 3, 32, 10).cuda()
    fast = build_model("vgg13", 3, 32, 10).cuda().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    steps = 5 if quick else 30

    def train(model, inp, amp):
        opt = torch.optim.SGD(model.parameters(), 0.01)

        def go():
            for _ in range(steps):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    loss = nn.functional.cross_entropy(model(inp), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            torch.cuda.synchronize()
        return go

    r = paired(train(fp32, x, False), train(fast, xc, True), repeats)
    return {"gpu_bf16_channels_last": figure(
        1 / r["ratio"], 1.5, "min", f"VGG-13 32 px training images/s, bf16+channels_last / fp32 on "
        f"{torch.cuda.get_device_name()}", fp32_images_per_s=steps * batch / r["a_s"],
        fast_images_per_s=steps * batch / r["b_s"], spread=[1 / r["spread"][1], 1 / r["spread"][0]])}


def main(argv):
    quick = "--quick" in argv
    s, extra = parse_settings(settings_of(globals()), [a for a in argv if a != "--quick"])
    check_settings(s, RANGES)
    if extra:
        raise UserError(f"unexpected argument {extra[0]!r}")
    repeats = 1 if quick else s["REPEATS"]
    figures = {}
    work = tempfile.mkdtemp(prefix="bench-")
    ckpt = os.path.join(work, "final.pt")  # written by the epoch figure, attacked by the next ones
    # the main job first: the peak of child processes would otherwise include DataLoader workers
    jobs = {"main-job": lambda: main_job(quick),
            "epoch": lambda: epoch_cost(repeats, quick, work),
            "speed-choices": lambda: layout_choices(repeats, quick, ckpt),  # these three attack the epoch's model
            "default-suite": lambda: suite_cost(repeats, quick, ckpt),
            "attack-cost": lambda: attack_cost(repeats, quick, ckpt),
            "floor": lambda: floor_cost(repeats, quick),
            "loss-cost": lambda: loss_cost(repeats, quick),
            "training-step": lambda: train_step_cost(repeats, quick),
            "input-pipeline": lambda: pipeline_cost(repeats, quick),
            "adversarial-training": lambda: adv_training_cost(repeats, quick),
            "cpu-bf16": lambda: bf16_cost(repeats, quick),
            "sweep-record": sweep_record,
            "gpu": lambda: gpu_speed(repeats, quick),
            "reproduce": lambda: reproduce_job(quick)}
    wanted = [g for g in GROUPS if not s["ONLY"] or g in s["ONLY"]]
    if {"speed-choices", "default-suite", "attack-cost"} & set(wanted) and "epoch" not in wanted:
        wanted = [g for g in GROUPS if g in wanted or g == "epoch"]  # they need its checkpoint
    for name, fn in ((g, jobs[g]) for g in wanted):
        start = time.perf_counter()
        torch.manual_seed(s["SEED"])  # every figure starts from --seed
        print(f"measuring {name} ...", end=" ", flush=True)
        figures.update(fn())
        print(f"{time.perf_counter() - start:.0f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    write_figures(figures, s["OUT"], quick, repeats)
    return 0


def write_figures(figures, out, quick, repeats):
    """OUT: the figures and the machine they were measured on (JSON), and one line per figure."""
    info = dict(quick=quick, repeats=repeats, torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                date=time.strftime("%Y-%m-%d %H:%M"))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(machine=info, figures=figures), f, indent=2)
    print(f"\n{'figure':26s} {'value':>9s} {'target':>9s}  verdict  spread")
    for name, fig in figures.items():
        value = "n/a" if fig["value"] is None else f"{fig['value']:.3f}"
        target = "-" if fig["target"] is None else ("<= " if fig.get("target_is") == "max" else ">= ") + f"{fig['target']}"
        verdict = {True: "ok", False: "MISS", None: "-"}[fig["met"]]
        spread = "" if "spread" not in fig else f"{fig['spread'][0]:.3f}..{fig['spread'][1]:.3f}"
        print(f"{name:26s} {value:>9s} {target:>9s}  {verdict:7s}  {spread}   {fig['what']}")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    sys.exit(run(main))
