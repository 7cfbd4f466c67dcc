"""The networks of the field's MNIST adversarial-training baselines.

- `wong-mnist`: Wong, Rice & Kolter (2020)'s MNIST net for fast (FGSM-RS) adversarial training
  (locuslab/fast_adversarial): conv 16@4x4 stride 2 pad 1, conv 32@4x4 stride 2 pad 1, FC 100,
  FC K, ReLU; the embedding is the 100-unit layer.
- `smallcnn`: TRADES' SmallCNN (yaodongyu/TRADES, Zhang et al. 2019): conv 32, 32 (3x3), max-pool,
  conv 64, 64, max-pool, FC 200, 200, K, ReLU, dropout 0.5 after the first FC as there; the
  embedding is the second 200-unit layer.
"""
from torch import nn

from .base import Classifier


class WongMNIST(Classifier):
    def __init__(self, in_channels, image_size, num_classes):
        super().__init__()
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(32 * side * side, 100), nn.ReLU())
        self.embed_dim = 100
        self.head = nn.Linear(100, num_classes)

    def embed(self, x):
        return self.features(x)


class SmallCNN(Classifier):
    def __init__(self, in_channels, image_size, num_classes):
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * side * side, 200), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(200, 200), nn.ReLU())
        self.embed_dim = 200
        self.head = nn.Linear(200, num_classes)
        for m in self.modules():  # TRADES' initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed(self, x):
        return self.features(x)


MODELS = {"wong-mnist": WongMNIST, "smallcnn": SmallCNN}
