"""The title paper's larger models, built with torchvision's own builders (no weights are
downloaded) and adapted to 28-64 px inputs:

- alexnet: torchvision's AlexNet with its first layer made a 3x3 convolution of stride 1 (the
  11x11 stride-4 stem would leave nothing of a 28 px image); the three max-pools and the adaptive
  6x6 average pool stay, so the classifier (dropout 0.5, 4096, 4096) is torchvision's. Embedding:
  the second 4096-unit layer.
- resnet18, resnet50: torchvision's ResNets with the CIFAR stem: a 3x3 stride-1 first convolution
  and no max-pool (the ImageNet stem, 7x7 stride 2 + max-pool, shrinks a 32 px image to 8 px before
  the first block). Embedding: the globally pooled features (512 or 2048).
"""
from torch import nn

from .base import Classifier


class AlexNet(Classifier):
    def __init__(self, in_channels, image_size, num_classes):
        super().__init__()
        from torchvision.models import alexnet
        net = alexnet(num_classes=num_classes)
        net.features[0] = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1)
        self.features = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *net.classifier[:-1])
        self.head = net.classifier[-1]
        self.embed_dim = self.head.in_features

    def embed(self, x):
        return self.features(x)


class TorchvisionResNet(Classifier):
    def __init__(self, builder, in_channels, num_classes):
        super().__init__()
        net = builder(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.head, net.fc = net.fc, nn.Identity()
        self.body = net
        self.embed_dim = self.head.in_features

    def embed(self, x):
        return self.body(x)


def _resnet(name):
    def build(in_channels, image_size, num_classes):
        from torchvision import models
        return TorchvisionResNet(getattr(models, name), in_channels, num_classes)
    return build


MODELS = {"alexnet": AlexNet, "resnet18": _resnet("resnet18"), "resnet50": _resnet("resnet50")}
