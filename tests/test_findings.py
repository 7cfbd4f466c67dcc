"""README's findings table: written from results/ by robustlib.findings, and checked against it."""
import os

import pandas as pd
import pytest

from robustlib import findings
from robustlib.errors import UserError


def test_readme_findings_are_the_committed_results(root):
    """README.md's table is what results/ says today: a rerun that changes a number, or an edit by
    hand, fails here until `python -m robustlib.findings` writes it again."""
    with open(os.path.join(root, "README.md")) as f:
        text = f.read()
    block = text.split("<!-- findings -->\n", 1)[1].split("<!-- /findings -->\n", 1)[0]
    assert block == findings.table() + "\n"
    assert len(findings.FINDINGS) >= 8


def rows(checkpoint, released, worst, eps=0.3, n=200):
    out = []
    for attack, acc in (("worst-released", released), ("worst", worst)):
        out.append(dict(checkpoint=checkpoint, attack=attack, eps=eps, accuracy=acc, ci_low=acc - 0.05,
                        ci_high=acc + 0.04, n=n, budget="standard"))
    return out


@pytest.fixture
def res(tmp_path):
    """Two seeds of m (method) against r (reference): worst 0.60 / 0.50 and 0.70 / 0.40."""
    for seed, (m, r, p, order) in enumerate(((0.60, 0.50, 0.01, "m-r"), (0.70, 0.40, 0.2, "r-m"))):
        pd.DataFrame(rows(f"m-{seed}/final", m + 0.2, m) + rows(f"r-{seed}/final", r + 0.1, r)).to_csv(
            tmp_path / f"t-{seed}.csv", index=False)
        a, b, d = (f"m-{seed}/final", f"r-{seed}/final", m - r) if order == "m-r" else \
            (f"r-{seed}/final", f"m-{seed}/final", r - m)
        (tmp_path / f"t-{seed}.md").write_text(f"| {a} - {b} | 0.3 | {100 * d:+.1f} | {p} | x |\n")
    return tmp_path


def test_one_seed_shows_intervals_and_mcnemar(res):
    f = dict(claim="m vs r", table="t-0", method="m-0/final", reference="r-0/final", eps=0.3, page="docs/x.md")
    assert findings.row(f, str(res)) == ("| [m vs r](docs/x.md) | 0.3 | 80.0 / 60.0 | 60.0 [55.0, 64.0] / 50.0 [45.0, 54.0] | "
                                         "+10.0 (p 0.01) | 200, 1 |")


def test_seeds_show_mean_sd_and_the_seeds_beyond_noise(res):
    """Seed 1's comparison is written reference first: the difference is still method minus reference."""
    f = dict(claim="m vs r", table="t-{seed}", seeds=(0, 1), method="m-{seed}/final", reference="r-{seed}/final",
             eps=0.3, page="docs/x.md")
    assert findings.row(f, str(res)) == ("| [m vs r](docs/x.md) | 0.3 | 85.0 ± 7.1 / 55.0 ± 7.1 | 65.0 ± 7.1 / 45.0 ± 7.1 | "
                                         "+20.0 ± 14.1 (t p 0.3; 1 of 2) | 200, 2 |")


def test_paired_p_by_hand():
    """t = mean / (sd / sqrt(n)) with n - 1 degrees of freedom: diffs 1, 2, 3 give t = 3.46, p = 0.074."""
    assert findings.paired_p([1.0, 2.0, 3.0]) == pytest.approx(0.0742, abs=1e-4)
    assert findings.paired_p([10.0, 30.0]) == pytest.approx(0.2952, abs=1e-4)
    assert findings.paired_p([0.0, 0.0, 0.0]) == 1.0 and findings.paired_p([-2.0, -2.0]) == 0.0


def test_no_reference_and_another_released_attack(res):
    t = pd.read_csv(res / "t-0.csv")
    extra = dict(t.iloc[0], attack="pgd-50x10", accuracy=0.9, n=1000)
    pd.concat([t, pd.DataFrame([extra])]).to_csv(res / "t-0.csv", index=False)
    f = dict(claim="m", table="t-0", method="m-0/final", reference=None, released="pgd-50x10", eps=0.3,
             page="docs/x.md")
    assert findings.row(f, str(res)) == "| [m](docs/x.md) | 0.3 | 90.0 | 60.0 [55.0, 64.0] | - | 1000 / 200, 1 |"


def test_a_claims_later_lines_leave_it_out(res):
    """One claim at two eps, then another: the claim and its link are written once, on its first line."""
    f = dict(claim="m vs r", table="t-0", method="m-0/final", reference="r-0/final", eps=0.3, page="docs/x.md")
    t = pd.read_csv(res / "t-0.csv")
    pd.concat([t, t.assign(eps=0.1)]).to_csv(res / "t-0.csv", index=False)
    (res / "t-0.md").write_text("| m-0/final - r-0/final | 0.3 | +10.0 | 0.01 | x |\n"
                                "| m-0/final - r-0/final | 0.1 | +10.0 | 0.02 | x |\n")
    lines = findings.table([f, dict(f, eps=0.1), dict(f, claim="other")], str(res)).splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == ["| [m vs r](docs/x.md)", "| ", "| [other](docs/x.md)"]
    assert [line.split(" | ")[1] for line in lines] == ["0.3", "0.1", "0.3"]


def test_missing_rows_tables_and_comparisons_are_one_line(res):
    f = dict(claim="m", table="t-0", method="m-0/final", reference="r-0/final", eps=0.1, page="docs/x.md")
    with pytest.raises(UserError, match=r"t-0.csv has no row worst-released at eps 0.1 of m-0/final"):
        findings.row(f, str(res))
    with pytest.raises(UserError, match=r"t-9.csv is missing"):
        findings.row(dict(f, table="t-9"), str(res))
    (res / "t-0.md").write_text("")
    with pytest.raises(UserError, match=r"compares m-0/final with r-0/final nowhere at eps 0.3"):
        findings.row(dict(f, eps=0.3), str(res))


def test_write_readme_replaces_only_the_marked_block(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("# t\n\nbefore\n<!-- findings -->\nold\n<!-- /findings -->\nafter\n")
    findings.write_readme(str(path), "| new |")
    assert path.read_text() == "# t\n\nbefore\n<!-- findings -->\n| new |\n<!-- /findings -->\nafter\n"
    path.write_text("no markers\n")
    with pytest.raises(UserError, match="needs one <!-- findings -->"):
        findings.write_readme(str(path), "| new |")


def test_every_relative_link_of_readme_and_docs_resolves(root):
    """A page moved or a results file renamed breaks the link that names it: README.md and docs/*.md."""
    import re
    pages = ["README.md"] + [os.path.join("docs", p) for p in sorted(os.listdir(os.path.join(root, "docs")))]
    broken = []
    for page in pages:
        with open(os.path.join(root, page)) as f:
            for target in re.findall(r"\]\(([^)\s]+)\)", f.read()):
                path = target.split("#", 1)[0]
                if path and not path.startswith(("http://", "https://")) and \
                        not os.path.exists(os.path.join(root, os.path.dirname(page), path)):
                    broken.append(f"{page}: {target}")
    assert broken == []


SECTIONS = ["Findings", "Install", "Quick start", "The losses in your own training loop", "Evaluate your own checkpoint",
            "Train", "Reproduce", "Layout", "Tests", "Cite", "Licence"]


def test_readme_is_a_front_door(root):
    """At most 15 KB, its sections in the newcomer's order, the install command within the first
    3 KB and the evaluation of one's own checkpoint within the first 8 KB (bytes, as a reader's
    browser counts them)."""
    with open(os.path.join(root, "README.md"), "rb") as f:
        raw = f.read()
    text = raw.decode()
    assert len(raw) <= 15 * 1024
    heads = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert [next((s for s in SECTIONS if h.startswith(s)), h) for h in heads] == SECTIONS
    install = raw.index(b"pip install torch")
    assert raw.index(b"## Install") < install and raw.index(b"\n", install) <= 3 * 1024
    evaluate = raw.index(b"python adv_testing.py runs/mine/final.pt")
    assert raw.index(b"## Evaluate your own checkpoint") < evaluate and raw.index(b"\n", evaluate) <= 8 * 1024
