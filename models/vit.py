"""A small Vision Transformer from Hugging Face transformers, initialised from scratch (nothing is
downloaded): 4 layers, width 192, 3 heads, patches of 4 px (8 px for 64 px inputs)."""
from transformers import ViTConfig, ViTForImageClassification

from .base import Classifier


class ViT(Classifier):
    def __init__(self, in_channels, image_size, num_classes):
        super().__init__()
        config = ViTConfig(image_size=image_size, patch_size=8 if image_size >= 64 else 4,
                           num_channels=in_channels, hidden_size=192, num_hidden_layers=4,
                           num_attention_heads=3, intermediate_size=384, num_labels=num_classes,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        vit = ViTForImageClassification(config)
        self.backbone = vit.vit  # ends with a layer norm
        self.head = vit.classifier
        self.embed_dim = config.hidden_size

    def embed(self, x):
        return self.backbone(pixel_values=x).last_hidden_state[:, 0]  # the [CLS] token


MODELS = {"vit": ViT}
