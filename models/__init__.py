"""Every architecture of the paper, built by name for a dataset's shape.

    model = build_model("vgg13", in_channels=3, image_size=64, num_classes=200)
    logits = model(x)          # x in [0, 1], shape (B, C, H, W)
    emb = model.embed(x)       # penultimate embedding (B, model.embed_dim), same method everywhere

Inputs are raw pixels in [0, 1]; none of the models normalises (as in the released code), so
attacks work in pixel space with clip [0, 1].
"""
from . import baselines, lenet, resnet, torchvision_nets, vgg
from .base import Classifier

_FAMILIES = [lenet.MODELS, vgg.MODELS, resnet.MODELS, torchvision_nets.MODELS, baselines.MODELS]
MODEL_NAMES = ("lenet5", "cnn3", "vgg11", "vgg13", "vgg16", "vgg19",
               "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vit",
               "lenet-classic", "alexnet", "resnet18", "resnet50",  # these four: the title paper
               "wong-mnist", "smallcnn")  # the MNIST baselines' networks (FGSM-RS, TRADES)


def build_model(name, in_channels, image_size, num_classes):
    """Build model `name` for images of `in_channels` x `image_size` x `image_size` and
    `num_classes` classes. Raises ValueError for an unknown name or an unusable shape."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; models: {', '.join(MODEL_NAMES)}")
    if image_size < 16 or num_classes < 2 or in_channels < 1:
        raise ValueError(f"{name} cannot be built for {in_channels}x{image_size}x{image_size} "
                         f"images and {num_classes} classes")
    if name == "vit":  # transformers is imported only when a ViT is asked for
        from .vit import MODELS as vit_models
        return vit_models[name](in_channels, image_size, num_classes)
    family = next(f for f in _FAMILIES if name in f)
    return family[name](in_channels, image_size, num_classes)


__all__ = ["build_model", "MODEL_NAMES", "Classifier"]
