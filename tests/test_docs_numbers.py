"""The accuracies on README.md and docs/ come from files the page names: each decimal written as a
percentage ("68.1 %", "68.1 [63.2, 72.6]") must occur in a tracked file under results/ (or RESULTS.md)
that the same page links or names, as written there or as a fraction there times 100 (one or two
decimals), unless it is one of the few that are not results of this project (OTHERS). A rerun that
changes a table, with the page left as it was, fails here. Its limit: a page that names many tables
(baselines, reproduction) draws on so many numbers that a stale value may still be found in one of
them; on the others most values are not (tests/test_docs_numbers.py's coverage test says how many)."""
import glob
import os
import re

OTHERS = {"11.35": "the share of the digit 1 in MNIST's test set (1,135 of 10,000): a constant classifier's accuracy"}
PERCENT = re.compile(r"(?<![\w./-])(\d+\.\d+)(?= ?%| \[)")
NAMED = re.compile(r"(results/[\w./-]*\w|RESULTS\.md)")


def numbers_of(root, paths):
    found = set()
    for path in paths:
        with open(os.path.join(root, path), errors="ignore") as f:
            found.update(re.findall(r"\d+\.\d+", f.read()))
    for x in list(found):
        if float(x) <= 1:
            found.update({f"{100 * float(x):.1f}", f"{100 * float(x):.2f}"})
    return found


def claims(text):
    """(percentages, files named) of a page's prose: code blocks and README's generated findings aside."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!-- findings -->.*?<!-- /findings -->", "", text, flags=re.S)  # tests/test_findings.py
    return PERCENT.findall(text), set(NAMED.findall(text))


def sources(files, named):
    return [f for f in files if any(f == n or f.startswith(n.rstrip("/") + "/") for n in named)]


def pages(root):
    return ["README.md"] + sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "docs", "*.md")))


def test_claims_are_percentages_and_named_files():
    got = claims("68.1 % [63.2, 72.6] of 0.05 at 12.5 [1.0, 2.0] in [t](../results/a/b.md), `results/c/`, ```9.9 %```")
    assert got == (["68.1", "12.5"], {"results/a/b.md", "results/c"})
    assert sources(["results/a/b.md", "results/c/d.csv", "results/cd.csv"], {"results/a/b.md", "results/c"}) == [
        "results/a/b.md", "results/c/d.csv"]


def test_every_percentage_comes_from_a_file_its_page_names(root, tracked):
    files, missing = tracked, []
    for page in pages(root):
        with open(os.path.join(root, page)) as f:
            numbers, named = claims(f.read())
        known = numbers_of(root, sources(files, named)) | set(OTHERS)
        missing += [f"{page}: {n}" for n in numbers if n not in known]
    assert missing == []


def test_most_pages_would_catch_a_stale_value(root, tracked):
    """How much the check can see: on most pages, fewer than half of the one-decimal percentages
    0.0-100.0 occur in the files the page names, so a changed value is likely to be caught."""
    files, blind = tracked, []
    for page in pages(root):
        with open(os.path.join(root, page)) as f:
            numbers, named = claims(f.read())
        known = numbers_of(root, sources(files, named))
        if numbers and sum(f"{i / 10:.1f}" in known for i in range(1001)) > 500:
            blind.append(page)
    assert len(blind) <= 3, blind
