"""Small CNNs of the MNIST family: LeNet-5 and a 3-conv CNN."""
from torch import nn

from .base import Classifier


def _pooled(size, times):
    for _ in range(times):
        size //= 2
    return size


class LeNet5(Classifier):
    """LeNet-5 (ReLU, max-pool): conv 6@5x5 (padded) - pool - conv 16@5x5 - pool - 120 - 84 - K.
    The embedding is the 84-unit layer."""

    def __init__(self, in_channels, image_size, num_classes):
        super().__init__()
        side = (image_size // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.embed_dim = 84
        self.head = nn.Linear(84, num_classes)

    def embed(self, x):
        return self.features(x)


class LeNetClassic(Classifier):
    """LeNet as in LeCun et al. (1998) and the title paper's code: sigmoid activations, 2x2
    average pooling, conv 6@5x5 (padded 2) - pool - conv 16@5x5 - pool - 120 - 84 - K.
    The embedding is the 84-unit layer (after its sigmoid)."""

    def __init__(self, in_channels, image_size, num_classes):
        super().__init__()
        side = (image_size // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid())
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


MODELS = {"lenet5": LeNet5, "cnn3": CNN3, "lenet-classic": LeNetClassic}
