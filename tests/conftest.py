import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: seconds or more each (scripts end to end, subprocesses, "
                                       "trainings); `pytest -m \"not slow\" tests` is the fast loop")


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def tracked(root):
    """The paths git tracks in the checkout (the layout and the pages' sources are judged on these)."""
    done = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout:
        pytest.skip("not a git checkout")
    return done.stdout.split()


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """final.pt of LeNet-5 after 3 cross-entropy epochs on digits: the checkpoint the attack tests share."""
    import vgg_training
    out = tmp_path_factory.mktemp("lenet")
    assert vgg_training.main(["--dataset=digits", "--warmup_epochs=3", "--epochs=0", "--lr=0.005",
                              f"--out_dir={out}"]) == 0
    return str(out / "final.pt")


@pytest.fixture(scope="module")
def model(ckpt):
    """The shared checkpoint's LeNet-5 in eval mode (one per test module)."""
    from robustlib.checkpoints import load_checkpoint, model_from_checkpoint
    return model_from_checkpoint(load_checkpoint(ckpt)).eval()


@pytest.fixture(scope="module")
def test_set():
    """digits' test split, the attack tests' images."""
    from robustlib.data import get_dataset
    return get_dataset("digits", False)


def run_script(script, env):
    """bash SCRIPT of the repository with the environment's variables plus `env` (this Python as
    PYTHON): the completed process, its output captured."""
    return subprocess.run(["bash", os.path.join(ROOT, script)], env=dict(os.environ, PYTHON=sys.executable, **env),
                          capture_output=True, text=True, timeout=900)
