"""The repository's shape (README's Layout): the top level holds what a user runs or copies, and no
function anywhere is longer than a reader takes in at once."""
import ast
import os

TOP = {  # what a user runs or copies, then the folders; LICENSE and CITATION.cff beside them
    "hard_margin_loss.py", "margin_loss_soft_logit.py", "spatial_structure_loss.py", "representation_consistency_loss.py",
    "adversarial_baselines.py", "vgg_training.py", "adv_testing.py", "setup.sh", "requirements.txt", "README.md",
    "RESULTS.md", "LICENSE", "CITATION.cff", ".gitignore", ".ci",
    "models", "Figures", "results", "tests", "docs",
    "robustlib", "studies", "tools"}  # the library, the studies, the developer tools (bench)
MAX_LINES = 40


def test_the_top_level_holds_only_the_product(tracked):
    assert sorted({path.split("/")[0] for path in tracked} - TOP) == []


def long_functions(source, name):
    """'name:line function (N lines)' for each function of `source` over MAX_LINES lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES:
                out.append(f"{name}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_is_over_40_lines(root, tracked):
    found = []
    for path in tracked:
        if path.endswith(".py"):
            with open(os.path.join(root, path)) as f:
                found += long_functions(f.read(), path)
    assert found == []


def test_the_length_check_counts_a_whole_function():
    """A function of 41 lines (def and body) is found, one of 40 is not, nested ones too."""
    body = "".join(f"    x{i} = {i}\n" for i in range(39))
    assert long_functions("def f():\n" + body, "m") == []
    assert long_functions("def f():\n" + body + "    return 1\n", "m") == ["m:1 f (41 lines)"]
    nested = "class C:\n    def g(self):\n" + "".join("    " + line + "\n" for line in (body + "    return 1").splitlines())
    assert long_functions(nested, "m") == ["m:2 g (41 lines)"]
