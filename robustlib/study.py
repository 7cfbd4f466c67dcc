"""The one runner of every study (their definitions: studies.py):

    python -m robustlib.study NAME [SETTING=VALUE ...]     # bash studies/NAME.sh [SETTING=VALUE ...]: the same

A study's plan yields its steps in order: runs to train (vgg_training.py), tables to attack
(adv_testing.py), and steps of its own (figures, the write-up). The runner trains a run unless it
has final.pt (one with last.pt only was interrupted and resumes, same settings), keeps its output
(RUNS/NAME.train.log), its command (RUNS/NAME/command.txt) and its record beside the tables
(RES/training/), attacks every table through the study's one job cache (RES/jobs.cache: finished
attacks are not computed again), and writes the study up from RES alone. Rerunning a study does
only what is missing. Settings come as SETTING=VALUE arguments or from the environment; besides
each study's own, every study takes
    STUDY_OUT     where runs/, results/, Figures/ and RESULTS.md go (default: the repository)
    STAGE         all (default) | train | attack | report (the write-up alone, from RES)
    PARALLEL      false (default) | true: the runs and tables of a stage at once, each its own process
    EXTRA         more settings for every training run (the tests: --dataset=digits, fewer epochs)
    ATTACK_EXTRA  more settings for every adv_testing.py call (the tests: small budgets)
"""
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

from .checkpoints import atomic_write, make_dirs
from .errors import RunError, UserError, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RENAMED = ("REPRO_OUT", "SWEEP_OUT", "BASELINES_OUT")  # each study's output folder before STUDY_OUT


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting of a study: its default, and `allowed(value)` with the words that say what is."""
    default: str
    allowed: object
    text: str


def choice(*values):
    return dict(allowed=lambda v: v in values, text="allowed " + ", ".join(values))


def words(pattern, text):
    """A space-separated list whose every word matches `pattern`."""
    return dict(allowed=lambda v: all(re.fullmatch(pattern, w) for w in v.split()) and v.strip() != "", text=text)


ANY = dict(allowed=lambda v: True, text="any text")
COMMON = {"STUDY_OUT": Setting(".", **ANY), "STAGE": Setting("all", **choice("all", "train", "attack", "report")),
          "PARALLEL": Setting("false", **choice("false", "true")), "EXTRA": Setting("", **ANY),
          "ATTACK_EXTRA": Setting("", **ANY)}


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run: its folder, vgg_training.py's settings, and where its record goes."""
    dir: str
    args: tuple
    records: str


@dataclasses.dataclass(frozen=True)
class Table:
    """An adv_testing.py table: its CSV, the checkpoints it attacks together, its settings."""
    csv: str
    checkpoints: tuple
    args: tuple


@dataclasses.dataclass(frozen=True)
class Step:
    """A step of the study's own: `do()` at STAGE all and attack (figures), and at report too when
    `write_up` (it reads RES alone)."""
    do: object
    write_up: bool = False


SETTLE = "settle"  # the plan waits here for every run and table started before it (PARALLEL=true)


@dataclasses.dataclass(frozen=True)
class Study:
    """A study: its settings ({NAME: Setting}) and its plan, plan(context) -> steps."""
    doc: str
    settings: dict
    plan: object


class Context:
    """What a plan reads: the settings (`s`), the output folder, the clock, and the helpers that
    name a run and a table."""

    def __init__(self, settings):
        self.s, self.out, self.start = settings, settings["STUDY_OUT"], time.time()
        self.runs = self.res = None  # the plan sets them

    def path(self, *parts):
        return os.path.join(self.out, *parts)

    def elapsed(self):
        return time.time() - self.start

    def run(self, name, *args):
        return Run(os.path.join(self.runs, name), tuple(a for arg in args for a in shlex.split(arg)),
                   os.path.join(self.res, "training"))

    def table(self, name, runs, *args):
        return Table(os.path.join(self.res, name + ".csv"), tuple(os.path.join(self.runs, r, "final.pt") for r in runs),
                     tuple(a for arg in args for a in shlex.split(arg)))

    def invocation(self, **seconds):
        """Record this invocation's seconds in RES/invocation.json (STAGE=report reads them back)."""
        path = os.path.join(self.res, "invocation.json")
        if self.s["STAGE"] == "report":
            if not os.path.exists(path):
                raise UserError(f"{path} is missing: run the study (STAGE=all) before STAGE=report")
            with open(path) as f:
                return json.load(f)
        make_dirs(self.res)
        atomic_write(path, lambda f: f.write(json.dumps(seconds, indent=1).encode()))
        return seconds


def flat(run_dir, runs):
    """A run's name in the records: its path under RUNS with '/' as '_'."""
    return os.path.relpath(run_dir, runs).replace(os.sep, "_")


class Runner:
    """Executes a plan's steps as STAGE and PARALLEL say; `started` holds the processes of a stage."""

    def __init__(self, ctx):
        self.ctx, self.started, self.done = ctx, [], set()
        self.python = sys.executable

    def stop(self, signum, frame):
        for process, *_ in self.started:
            process.terminate()
        sys.exit(128 + signum)

    def train(self, step):
        if os.path.exists(os.path.join(step.dir, "final.pt")) or step.dir in self.done:
            self.done.add(step.dir)
            return self.keep_record(step)
        self.done.add(step.dir)
        make_dirs(os.path.dirname(step.dir) or ".")
        resume = os.path.exists(os.path.join(step.dir, "last.pt"))
        args = [*step.args, *shlex.split(self.ctx.s["EXTRA"]), f"--out_dir={step.dir}"]
        log = step.dir + ".train.log"
        self.start([self.python, os.path.join(REPO, "vgg_training.py"), *args, f"--resume={str(resume).lower()}"],
                   log, f"trained {os.path.relpath(step.dir, self.ctx.runs)}", f"training {step.dir}",
                   lambda: self.finish_run(step, args))

    def finish_run(self, step, args):
        atomic_write(os.path.join(step.dir, "command.txt"),
                     lambda f: f.write(("python vgg_training.py " + " ".join(args) + "\n").encode()))
        self.keep_record(step)

    def keep_record(self, step):
        """The run's log.csv, command and output beside the tables (RES/training/FLAT.*)."""
        if not os.path.exists(os.path.join(step.dir, "final.pt")):
            return
        make_dirs(step.records)
        name = flat(step.dir, self.ctx.runs)
        for source, suffix in ((os.path.join(step.dir, "log.csv"), "log.csv"),
                               (os.path.join(step.dir, "command.txt"), "command.txt"), (step.dir + ".train.log", "train.log")):
            if os.path.exists(source):
                shutil.copyfile(source, os.path.join(step.records, f"{name}.{suffix}"))

    def attack(self, step):
        res = self.ctx.res
        make_dirs(os.path.dirname(step.csv))
        name = os.path.relpath(step.csv, res)[:-len(".csv")]
        self.start([self.python, os.path.join(REPO, "adv_testing.py"), *step.checkpoints, *step.args, f"--out={step.csv}",
                    f"--cache={os.path.join(res, 'jobs.cache')}", *shlex.split(self.ctx.s["ATTACK_EXTRA"])],
                   step.csv[:-len(".csv")] + ".out", f"attacked {name} ({len(step.checkpoints)} models)",
                   f"attacking {name}", lambda: None)

    def start(self, command, log, done_text, what, then):
        f = open(log, "w")
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        self.started.append((process, f, time.time(), log, done_text, what, then))
        if self.ctx.s["PARALLEL"] == "false":
            self.settle()

    def settle(self):
        """Wait for every process started; a line for each as it ends; one failure stops the study."""
        failed = []
        while self.started:
            for item in [i for i in self.started if i[0].poll() is not None]:
                self.started.remove(item)
                process, f, t0, log, done_text, what, then = item
                f.close()
                if process.returncode != 0:
                    with open(log) as out:
                        last = (out.read().strip().splitlines() or [""])[-1]
                    failed.append(f"{what} failed (its output: {log}): {last}")
                    continue
                then()
                print(f"{time.strftime('%H:%M:%S')} {done_text} in {time.time() - t0:.0f} s", flush=True)
            time.sleep(0.1 if self.started else 0)
        if failed:
            raise RunError(failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))


def execute(study, ctx):
    """Walk the study's plan: each step as STAGE says (report: the write-ups alone)."""
    runner, stage = Runner(ctx), ctx.s["STAGE"]
    before = signal.signal(signal.SIGTERM, runner.stop)  # `timeout` stops the runner: its processes stop too
    try:
        for step in study.plan(ctx):
            if step == SETTLE:
                runner.settle()
            elif isinstance(step, Run) and stage in ("all", "train"):
                runner.train(step)
            elif isinstance(step, Table) and stage in ("all", "attack"):
                runner.attack(step)
            elif isinstance(step, Step) and (stage in ("all", "attack") or (step.write_up and stage == "report")):
                runner.settle()
                step.do()
        runner.settle()
    finally:
        signal.signal(signal.SIGTERM, before)


def settings_from(study, argv, environ):
    """The study's settings: its defaults, then the environment, then SETTING=VALUE arguments."""
    table = {**COMMON, **study.settings}
    for old in RENAMED:
        if old in environ or any(a.startswith(old + "=") for a in argv):
            raise UserError(f"{old} is now STUDY_OUT (one name for every study's output folder)")
    values = {name: environ.get(name, setting.default) for name, setting in table.items()}
    for arg in argv:
        name, sep, value = arg.partition("=")
        if not sep or name not in table:
            raise UserError(f"{arg}: settings are SETTING=VALUE, SETTING one of {', '.join(table)}")
        values[name] = value
    for name, value in values.items():
        if not table[name].allowed(value):
            raise UserError(f"{name}={value} is out of range: {table[name].text}")
    return values


def main(argv):
    from .studies import STUDIES
    if not argv or argv[0] not in STUDIES:
        raise UserError(f"usage: python -m robustlib.study NAME [SETTING=VALUE ...], NAME one of {', '.join(STUDIES)}")
    study = STUDIES[argv[0]]
    ctx = Context(settings_from(study, argv[1:], os.environ))
    execute(study, ctx)
    seconds = ctx.elapsed()
    print(f"study {argv[0]} ({ctx.s['STAGE']}) finished in {seconds // 60:.0f} min {seconds % 60:.0f} s")
    return 0


if __name__ == "__main__":  # the module by its own name, whose classes studies.py's plans use
    from robustlib import study
    sys.exit(run(study.main))
