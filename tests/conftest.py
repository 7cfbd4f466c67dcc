import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """final.pt of LeNet-5 after 3 cross-entropy epochs on digits: the checkpoint the attack tests share."""
    import vgg_training
    out = tmp_path_factory.mktemp("lenet")
    assert vgg_training.main(["--dataset=digits", "--warmup_epochs=3", "--epochs=0", "--lr=0.005",
                              f"--out_dir={out}"]) == 0
    return str(out / "final.pt")
