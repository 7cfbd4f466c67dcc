"""make_figures.py: the motivation statistics on a hand-built case, and every figure on `digits`."""
import pytest
import torch

from studies import make_figures
import vgg_training


def test_new_attack_ranks_hand_built():
    # 4 classes. Clean class order per sample (most to least probable):
    #   s0: 0, 2, 1, 3  (label 0, correct)     s1: 1, 3, 0, 2  (label 1, correct)
    #   s2: 2, 0, 3, 1  (label 2, correct)     s3: 3, 0, 1, 2  (label 0, wrong on clean input)
    clean = torch.tensor([[4.0, 2.0, 3.0, 1.0], [2.0, 4.0, 1.0, 3.0],
                          [3.0, 1.0, 4.0, 2.0], [3.0, 2.0, 1.0, 4.0]])
    labels = torch.tensor([0, 1, 2, 0])
    preds = [(0.1, torch.tensor([2, 1, 2, 1])),   # s0 fooled -> class 2 = its 2nd; s3 never counts
             (0.2, torch.tensor([2, 0, 2, 1])),   # s1 newly fooled -> class 0 = its 3rd
             (0.3, torch.tensor([1, 0, 1, 3]))]   # s2 newly fooled -> class 1 = its 4th
    rows = make_figures.new_attack_ranks(clean, labels, preds)
    assert [r["new"] for r in rows] == [1, 1, 1]
    assert (rows[0]["rank2"], rows[1]["rank3"], rows[2]["rank4"]) == (1.0, 1.0, 1.0)
    assert rows[0]["rank3"] == rows[1]["rank2"] == rows[2]["other"] == 0.0


def test_model_whose_second_class_is_known():
    """A linear 'model' whose clean second choice is always class (y+1) % K, attacked toward it."""
    k, n = 5, 40
    labels = torch.arange(n) % k
    clean = torch.zeros(n, k)
    clean[torch.arange(n), labels] = 5.0
    clean[torch.arange(n), (labels + 1) % k] = 3.0
    adv = torch.where(torch.arange(n) < 10, (labels + 1) % k, labels)  # the first 10 are fooled
    rows = make_figures.new_attack_ranks(clean, labels, [(0.1, adv), (0.2, adv)])
    assert rows[0]["new"] == 10 and rows[0]["rank2"] == 1.0
    assert rows[1]["new"] == 0  # already fooled: not new


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = tmp_path_factory.mktemp("figs")
    assert vgg_training.main(["--dataset=digits", "--warmup_epochs=2", "--epochs=1", "--lr=0.005",
                              f"--out_dir={out}"]) == 0
    return str(out / "ce_warmup.pt"), str(out / "final.pt")


@pytest.mark.slow
def test_every_figure_is_written(checkpoints, tmp_path):
    ce, pc = checkpoints
    args = [f"--ce={ce}", f"--pc={pc}", f"--out_dir={tmp_path}", "--n_motivation=100", "--n_tsne=80",
            "--fgsm_eps=0.05,0.1", "--mim_eps=0.05"]
    assert make_figures.main(args) == 0
    for suffix in ("motivation.png", "effect.png", "tsne.png"):
        path = tmp_path / f"digits-lenet5-{suffix}"
        assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "digits-lenet5-figures.md").read_text()
    assert "| CE |" in text and "| PC |" in text and "| fgsm | 0.1 |" in text
    import pandas as pd
    stats = pd.read_csv(tmp_path / "digits-lenet5-motivation.csv")
    assert set(stats.attack) == {"fgsm", "mim"} and (stats["new"] >= 0).all()
