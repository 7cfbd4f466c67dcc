"""VGG-11/13/16/19 with batch norm, for 28, 32 and 64 px inputs.

Each 'M' is a 2x2 max-pool with ceil_mode, so 28 px input ends at 1x1 like 32 px does and
64 px ends at 2x2; a global average pool then gives the 512-d embedding.
"""
from functools import partial

from torch import nn

from .base import Classifier

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGG(Classifier):
    def __init__(self, config, in_channels, image_size, num_classes):
        super().__init__()
        layers, channels = [], in_channels
        for item in CONFIGS[config]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1, bias=False),
                           nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed_dim = channels
        self.head = nn.Linear(channels, num_classes)

    def embed(self, x):
        return self.features(x)


MODELS = {name: partial(VGG, name) for name in CONFIGS}
