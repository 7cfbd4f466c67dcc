"""README.md's findings table, written from the committed tables under results/ and nothing else:

    python -m robustlib.findings          # rewrites the table between README's findings markers

A finding is one entry of FINDINGS: a method's checkpoint against a reference checkpoint, at one
eps, in the adv_testing tables `table` (one per seed: `{seed}` in the names). Its row shows what the
released attacks say (the `released` row of the tables), what the strongest evaluation says (`worst`:
every attack of the default suite, AutoAttack included, on the same images), their difference (one
seed: with the exact McNemar p of adv_testing's comparison; several: mean ± sd, "t p" the paired t
test's p over seeds, and in how many seeds McNemar's p < 0.05), the evidence (n, seeds, intervals),
and the claim linked to the page that discusses it (on the first of its lines, one per eps).
tests/test_findings.py fails when README's table and this disagree.
"""
import os
import statistics
import sys

from . import report
from .checkpoints import atomic_write
from .errors import UserError, run
from .studies import ce_pclc_findings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = (0, 1, 2)
_REPRO, _BASE = "results/{}-lenet5/robustness", "results/mnist-baselines"
FINDINGS = [
    *ce_pclc_findings("fashion-mnist"), *ce_pclc_findings("mnist"),  # the ce-vs-pclc study's own rows
    dict(claim="SSC (λ 100) + PGD-AT vs PGD-AT, Fashion-MNIST", table=_REPRO.format("fashion-mnist"),
         method="adv-struct/final", reference="adv/final", eps=0.1, page="docs/reproduction.md"),
    *[dict(claim=f"{method} on top of {base} vs {against}, MNIST", table=_BASE + f"/on-{folder}/seed-{{seed}}",
           seeds=SEEDS, method=f"{arm}-seed-{{seed}}/final", reference=f"{ref}-seed-{{seed}}/final", eps=0.3,
           page="docs/baselines.md")
      for base, folder, against, ref in (("PGD-AT", "pgd-at", "the control", "split"),
                                         ("FGSM-RS", "fgsm-rs", "FGSM-RS", "fgsm-rs"))
      for method, arm in (("PC + LC", "pclc"), ("SSC (λ 300)", "ssc"))],
    dict(claim="FGSM-RS trained here as released (its PGD-50 x 10)", table=_BASE + "/fgsm-rs/seeds-0-2",
         seeds=SEEDS, method="fgsm-rs-seed-{seed}/final", reference=None, released="pgd-50x10", eps=0.3,
         page="docs/baselines.md"),
    dict(claim="FGSM-RS, fast_adversarial's model (its PGD-50 x 10)",
         table=_BASE + "/released-models/fast-adversarial", method="fa/fgsm", reference=None,
         released="pgd-50x10", eps=0.3, page="docs/baselines.md"),
]
HEADER = ["| finding | eps | released attacks (%) | worst case (%) | difference (points) | n, seeds |",
          "|---|---|---|---|---|---|"]


def read_table(root, name):
    """(rows of NAME.csv, McNemar lines of NAME.md) of an adv_testing table."""
    import pandas as pd
    path = os.path.join(root, name)
    for ext in (".csv", ".md"):
        if not os.path.exists(path + ext):
            raise UserError(f"{path}{ext} is missing: run the command of the finding's page first")
    with open(path + ".md") as f:
        return pd.read_csv(path + ".csv"), [m.groups() for m in map(report.PAIR.match, f) if m]


def value(t, checkpoint, attack, eps, where):
    rows = t[(t.checkpoint == checkpoint) & (t.attack == attack) & ((t.eps - eps).abs() < 1e-9)]
    if rows.empty:
        raise UserError(f"{where}.csv has no row {attack} at eps {eps:g} of {checkpoint}")
    return rows.iloc[0]


def p_value(pairs, a, b, eps, where):
    """The exact McNemar p of adv_testing's comparison of a and b at eps (either order)."""
    for x, y, e, _, p in pairs:
        if {x, y} == {a, b} and abs(float(e) - eps) < 1e-9:
            return float(p)
    raise UserError(f"{where}.md compares {a} with {b} nowhere at eps {eps:g}: attack them together")


def paired_p(diffs):
    """Two-sided p of the one-sample t test that the per-seed differences have mean 0 (1.0 when they
    are all equal and 0, 0.0 when all equal and not 0)."""
    from scipy import stats
    if max(diffs) == min(diffs):
        return 1.0 if diffs[0] == 0 else 0.0
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def cell(rows, interval):
    """One value: 'v [lo, hi]' (interval asked) or 'v'; several: 'mean ± sd'."""
    return report.mean_sd([100 * r.accuracy for r in rows],
                          (100 * rows[0].ci_low, 100 * rows[0].ci_high) if interval else None)


def row(f, root=ROOT, first=True):
    """The finding's line of the table; the claim, linked to its page, only on the `first` of its lines."""
    seeds, eps, released = f.get("seeds", (0,)), f["eps"], f.get("released", "worst-released")
    got = {"method": {"released": [], "worst": []}, "reference": {"released": [], "worst": []}}
    diffs, ps = [], []
    for seed in seeds:
        where = os.path.join(root, f["table"].format(seed=seed))
        t, pairs = read_table(root, f["table"].format(seed=seed))
        names = {"method": f["method"].format(seed=seed)}
        if f["reference"]:
            names["reference"] = f["reference"].format(seed=seed)
        for role, name in names.items():
            for key, attack in (("released", released), ("worst", "worst")):
                got[role][key].append(value(t, name, attack, eps, where))
        if f["reference"]:
            diffs.append(100 * (got["method"]["worst"][-1].accuracy - got["reference"]["worst"][-1].accuracy))
            ps.append(p_value(pairs, names["method"], names["reference"], eps, where))
    pair = lambda key, interval: " / ".join(  # noqa: E731
        cell(got[role][key], interval) for role in ("method", "reference") if got[role][key])
    if not f["reference"]:
        diff = "-"
    elif len(seeds) == 1:
        diff = f"{diffs[0]:+.1f} (p {ps[0]:.2g})"
    else:
        diff = (f"{statistics.mean(diffs):+.1f} ± {statistics.stdev(diffs):.1f} (t p {paired_p(diffs):.2g}; "
                f"{sum(p < 0.05 for p in ps)} of {len(ps)})")
    sizes = [int(got["method"][key][0].n) for key in ("released", "worst")]
    evidence = f"{sizes[1]}" if sizes[0] == sizes[1] else f"{sizes[0]} / {sizes[1]}"
    claim = f"[{f['claim']}]({f['page']})" if first else ""
    return (f"| {claim} | {eps:g} | {pair('released', False)} | {pair('worst', len(seeds) == 1)} | {diff} | "
            f"{evidence}, {len(seeds)} |")


def table(findings=FINDINGS, root=ROOT):
    """The table: a claim's lines one after another (its eps), the claim written on the first."""
    claims = [f["claim"] for f in findings]
    return "\n".join(HEADER + [row(f, root, i == 0 or claims[i - 1] != f["claim"]) for i, f in enumerate(findings)])


def write_readme(path, text):
    """README.md with the text between its `<!-- findings -->` markers replaced."""
    with open(path) as f:
        old = f.read()
    start, end = "<!-- findings -->\n", "<!-- /findings -->\n"
    if old.count(start) != 1 or old.count(end) != 1:
        raise UserError(f"{path} needs one {start.strip()} and one {end.strip()} line")
    head, rest = old.split(start)
    new = head + start + text.rstrip("\n") + "\n" + end + rest.split(end, 1)[1]
    atomic_write(path, lambda f: f.write(new.encode()))


def main(argv):
    if argv:
        raise UserError("usage: python -m robustlib.findings (rewrites README.md's findings table)")
    text = table()
    write_readme(os.path.join(ROOT, "README.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
