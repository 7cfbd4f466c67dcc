"""The wiring mutations of docs/tests.md, each applied to the library, run against the fast wiring
tests and reverted: every one must make a test fail ("KILLED").

    .venv/bin/python tools/wiring_mutations.py     # about a minute; prints one line per mutation
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTATIONS = [  # (name, file, the line's text, the mutated text)
    ("ALPHA and BETA swapped", "robustlib/training.py", 'return s["ALPHA"] * L(z, y) + s["BETA"] * L(z_adv, y)',
     'return s["BETA"] * L(z, y) + s["ALPHA"] * L(z_adv, y)'),
    ("the STRUCT_ON choice inverted", "robustlib/training.py", 'REPRESENTATION = {"logits": 0, "embedding": 1}',
     'REPRESENTATION = {"logits": 1, "embedding": 0}'),
    ("PCLoss() ignoring MARGIN", "robustlib/training.py", "pc, lc = PCLoss(xi=margin), LogitConstraintLoss()",
     "pc, lc = PCLoss(), LogitConstraintLoss()"),
    ("the probability gap's sign flipped", "robustlib/metrics.py", "return true - others.max(dim=1).values",
     "return others.max(dim=1).values - true"),
    ("the McNemar verdict inverted", "robustlib/evaluation.py",
     'verdict = "beyond noise" if p < 0.05 else "within noise"', 'verdict = "beyond noise" if p >= 0.05 else "within noise"'),
    ("the comparison's difference reversed", "robustlib/evaluation.py",
     "diff = 100 * (ra.float().mean() - rb.float().mean()).item()",
     "diff = 100 * (rb.float().mean() - ra.float().mean()).item()"),
]


def main():
    survived = 0
    for name, rel, line, mutated in MUTATIONS:
        path = os.path.join(ROOT, rel)
        with open(path) as f:
            source = f.read()
        if source.count(line) != 1:
            print(f"{name}: the line is not in {rel} once: update MUTATIONS")
            return 2
        try:
            with open(path, "w") as f:
                f.write(source.replace(line, mutated))
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "tests/test_wiring.py"],
                                  cwd=ROOT, capture_output=True, text=True)
        finally:
            with open(path, "w") as f:
                f.write(source)
        survived += done.returncode == 0
        print(f"{name} ({rel}): {'SURVIVED' if done.returncode == 0 else 'KILLED'}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
