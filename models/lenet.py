"""Small CNNs of the MNIST family: LeNet-5 and a 3-conv CNN."""
from functools import partial

from torch import nn

from .base import Classifier


def _pooled(size, times):
    for _ in range(times):
        size //= 2
    return size


class LeNet5(Classifier):
    """LeNet-5: conv 6@5x5 (padded 2) - pool - conv 16@5x5 - pool - 120 - 84 - K; the embedding
    is the 84-unit layer. By default ReLU and 2x2 max-pooling; `classic=True` gives LeCun et al.
    (1998) as the title paper's code has it: sigmoid activations and 2x2 average pooling."""

    def __init__(self, in_channels, image_size, num_classes, classic=False):
        super().__init__()
        act, pool = (nn.Sigmoid, nn.AvgPool2d) if classic else (nn.ReLU, nn.MaxPool2d)
        side = (image_size // 2 - 4) // 2
        # ReLU and max-pooling commute exactly (values and gradients), so the ReLU version pools
        # first and applies ReLU to a quarter of the values; the sigmoid/average version cannot.
        # Either order keeps the parameter names (features.0, .3, .7, .9), so checkpoints load.
        block = (lambda: (pool(2), act())) if not classic else (lambda: (act(), pool(2)))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), *block(),
            nn.Conv2d(6, 16, 5), *block(), nn.Flatten(),
            nn.Linear(16 * side * side, 120), act(), nn.Linear(120, 84), act())
        self.embed_dim = 84
        self.head = nn.Linear(84, num_classes)

    def embed(self, x):
        return self.features(x)


class CNN3(Classifier):
    """Three 3x3 conv blocks (32, 64, 128 channels, each followed by a 2x2 max-pool), a 256-unit
    embedding layer, then the classifier."""

    def __init__(self, in_channels, image_size, num_classes):
        super().__init__()
        layers, channels = [], in_channels
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        side = _pooled(image_size, 3)
        self.features = nn.Sequential(*layers, nn.Flatten(),
                                      nn.Linear(128 * side * side, 256), nn.ReLU())
        self.embed_dim = 256
        self.head = nn.Linear(256, num_classes)

    def embed(self, x):
        return self.features(x)


MODELS = {"lenet5": LeNet5, "cnn3": CNN3, "lenet-classic": partial(LeNet5, classic=True)}
