"""The study runner and the studies' definitions without training anything: settings (environment,
then SETTING=VALUE), what each STAGE executes, and the runs and tables each plan yields."""
import pytest

from robustlib import study, studies
from robustlib.errors import UserError


def settings(name, *argv, **environ):
    return study.settings_from(studies.STUDIES[name], list(argv), environ)


def test_settings_environment_then_arguments_then_ranges():
    s = settings("baselines", "BASE=fgsm-rs", PART="on-top", BASE="pgd-at")
    assert (s["PART"], s["BASE"], s["BUDGET"], s["STAGE"], s["STUDY_OUT"]) == ("on-top", "fgsm-rs", "cpu", "all", ".")
    with pytest.raises(UserError, match=r"^SEEDS=0,1 is out of range: seeds as whole numbers separated by spaces$"):
        settings("baselines", SEEDS="0,1")
    with pytest.raises(UserError, match=r"^STAGE=trian is out of range: allowed all, train, attack, report$"):
        settings("reproduce", "STAGE=trian")
    with pytest.raises(UserError, match="GRID=cpu: settings are SETTING=VALUE"):
        settings("reproduce", "GRID=cpu")  # another study's setting
    with pytest.raises(UserError, match="SWEEP_OUT is now STUDY_OUT"):
        settings("mnist-ssc", SWEEP_OUT="/tmp/x")


def plan(name, **values):
    ctx = study.Context(settings(name, *(f"{k}={v}" for k, v in values.items()), STUDY_OUT="/o"))
    return ctx, list(studies.STUDIES[name].plan(ctx))


def runs_of(steps):
    return {s.dir[len("/o/runs/"):]: " ".join(s.args) for s in steps if isinstance(s, study.Run)}


def test_baselines_plan_tiny_on_pgd_at_and_on_fgsm_rs():
    _, steps = plan("baselines", BUDGET="tiny")
    runs = runs_of(steps)
    assert list(runs) == ["mnist-baselines/pgd-at-seed-0", "mnist-baselines/trades", "mnist-baselines/mart",
                          "mnist-baselines/fgsm-rs-seed-0"] + [f"mnist-baselines/on-pgd-at/{a}-seed-0"
                                                               for a in ("pclc", "ssc", "rcc", "split")]
    assert runs["mnist-baselines/on-pgd-at/ssc-seed-0"] == (
        "--preset=pgd-at-mnist --seed=0 --epochs=1 --adv_steps=2 --adv_step_size=0 --milestones=1 --warmup_epochs=1 "
        "--epochs=1 --milestones=1 --struct=ssc --struct_lambda=300 --struct_on=logits --struct_metric=euclidean "
        "--struct_in_warmup=false --epochs=1")
    tables = [s for s in steps if isinstance(s, study.Table)]
    assert [t.csv for t in tables] == ["/o/results/mnist-baselines/baselines.csv",
                                       "/o/results/mnist-baselines/quick-budget/baselines.csv",
                                       "/o/results/mnist-baselines/on-pgd-at/seed-0.csv"]
    assert tables[1].args == ("--eps=0.3", "--budget=quick") and tables[2].checkpoints[0].endswith("/pgd-at-seed-0/final.pt")
    _, steps = plan("baselines", PART="on-top", BASE="fgsm-rs", SEEDS="3 4")
    runs = runs_of(steps)  # no warm-up on FGSM-RS: no split control; its own recipe, no SmallCNN budget
    assert sorted(runs) == sorted([f"mnist-baselines/fgsm-rs-seed-{s}" for s in (3, 4)] + [
        f"mnist-baselines/on-fgsm-rs/{a}-seed-{s}" for a in ("pclc", "ssc", "rcc") for s in (3, 4)])
    assert runs["mnist-baselines/on-fgsm-rs/pclc-seed-4"] == "--preset=fgsm-rs-mnist --seed=4 --loss=pclc"


def test_gpu_budget_sizes_the_schedule():
    b = studies.baseline_budget(dict(BUDGET="gpu", GPU_EPOCHS="20", GPU_EXTRA="--amp=x"))
    assert b["smallcnn"] == "--epochs=20 --milestones=11 --amp=x"
    assert b["warm"] == "--warmup_epochs=10 --epochs=10 --milestones=6"
    assert studies.milestone(1) == 1 and studies.milestone(100) == 55


def test_mnist_ssc_tiny_grid_and_reproduce_runs():
    _, steps = plan("mnist-ssc", GRID="tiny", EPOCHS="2")
    runs = runs_of(steps)
    assert sorted(runs) == sorted(f"mnist-ssc/{n}" for n in (
        "fgsm-eps0.3-lambda0-seed0", "fgsm-eps0.3-lambda300-seed0", "fgsm-eps0.3-lambda0-seed1",
        "fgsm-eps0.3-lambda0-seed2", "pgd-eps0.3-lambda0-seed0", "mim-eps0.3-lambda0-seed0"))
    assert runs["mnist-ssc/pgd-eps0.3-lambda0-seed0"] == (
        "--preset=ssc-mnist --adv_train=pgd --adv_eps=0.3 --struct_lambda=0 --seed=0 --epochs=2")
    tables = [s for s in steps if isinstance(s, study.Table)]
    assert [t.args[0] for t in tables] == [f"--attacks=released,autoattack,adaptive,{a}" for a in ("fgsm", "ssc-pgd", "ssc-mim")]
    assert all("--budget=standard" in t.args and "--n_strong=200" in t.args for t in tables)  # the suite of record
    assert len(tables[0].checkpoints) == 4
    fashion = studies.reproduce_runs("fashion-mnist")
    assert list(fashion) == ["ce", "pclc", "adv", "adv-struct"]
    assert fashion["adv-struct"] == ("--loss=ce --warmup_epochs=4 --epochs=4 --adv_train=pgd --adv_eps=0.1 --adv_steps=3 "
                                     "--struct_lambda=100") and fashion["adv"].endswith("--struct_lambda=0")
    assert "--adv_eps=0.3 --adv_steps=10" in studies.reproduce_runs("mnist")["adv"]


def test_ce_vs_pclc_l2_attacks_the_same_runs_in_l2():
    """The L2 study trains nothing of its own: seed 0 of ce-vs-pclc's runs, the same settings, its
    tables in L2 at the dataset's radii; its findings rows read those tables."""
    _, l2 = plan("ce-vs-pclc-l2", DATASETS="mnist")
    _, linf = plan("ce-vs-pclc", DATASETS="mnist", SEEDS="0")
    assert runs_of(l2) == runs_of(linf) == {
        f"ce-vs-pclc/mnist/seed-0/{arm}": f"--dataset=mnist --loss={arm} --warmup_epochs=8 --epochs=8 --seed=0"
        for arm in ("ce", "pclc")}
    (table,) = [s for s in l2 if isinstance(s, study.Table)]
    assert table.csv == "/o/results/ce-vs-pclc-l2/mnist/seed-0.csv" and "--norm=l2" in table.args
    assert "--eps=1.0,2.0" in table.args and "--n=500" in table.args
    rows = studies.ce_pclc_findings("mnist", (0,), norm="l2")
    assert [(r["table"], r["eps"], r["claim"]) for r in rows] == [
        ("results/ce-vs-pclc-l2/mnist/seed-{seed}", e, "PC + LC vs CE (+ adaptive suite), MNIST, L2") for e in (1.0, 2.0)]


def test_stages_execute_their_steps(monkeypatch):
    done = []
    monkeypatch.setattr(study.Runner, "train", lambda self, s: done.append("train"))
    monkeypatch.setattr(study.Runner, "attack", lambda self, s: done.append("attack"))

    def plan_of(ctx):
        yield ctx.run("a")
        yield study.SETTLE
        yield ctx.table("t", ["a"])
        yield study.Step(lambda: done.append("figure"))
        yield study.Step(lambda: done.append("write-up"), write_up=True)
    fake = study.Study("", {}, lambda ctx: (setattr(ctx, "runs", "/r") or setattr(ctx, "res", "/s") or plan_of(ctx)))
    expected = {"all": ["train", "attack", "figure", "write-up"], "train": ["train"],
                "attack": ["attack", "figure", "write-up"], "report": ["write-up"]}
    for stage, want in expected.items():
        done.clear()
        study.execute(fake, study.Context(study.settings_from(fake, [f"STAGE={stage}"], {})))
        assert done == want, stage


def test_runner_trains_what_is_missing_resumes_and_keeps_records(tmp_path, monkeypatch):
    ctx = study.Context(study.settings_from(studies.STUDIES["reproduce"], ["EXTRA=--epochs=1"], {}))
    ctx.runs, ctx.res = str(tmp_path / "runs"), str(tmp_path / "res")
    started = []
    monkeypatch.setattr(study.Runner, "start", lambda self, command, *rest: started.append(command))
    runner = study.Runner(ctx)
    done = tmp_path / "runs" / "on-x" / "done"
    done.mkdir(parents=True)
    for name, text in (("final.pt", "w"), ("log.csv", "epoch\n1\n"), ("command.txt", "python vgg_training.py\n")):
        (done / name).write_text(text)
    runner.train(ctx.run("on-x/done", "--loss=ce"))
    assert started == []  # final.pt: not trained again, its record kept beside the tables
    assert (tmp_path / "res/training/on-x_done.log.csv").read_text() == "epoch\n1\n"
    assert (tmp_path / "res/training/on-x_done.command.txt").exists()
    half = tmp_path / "runs" / "half"
    half.mkdir()
    (half / "last.pt").write_text("w")
    runner.train(ctx.run("half", "--loss=pclc --seed=2"))
    runner.train(ctx.run("fresh", "--loss=ce"))
    runner.train(ctx.run("fresh", "--loss=ce"))  # named twice: trained once
    assert [c[2:] for c in started] == [
        ["--loss=pclc", "--seed=2", "--epochs=1", f"--out_dir={half}", "--resume=true"],
        ["--loss=ce", "--epochs=1", f"--out_dir={tmp_path / 'runs' / 'fresh'}", "--resume=false"]]
