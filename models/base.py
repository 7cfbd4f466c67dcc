"""The one interface every model of the project shares."""
from torch import nn


class Classifier(nn.Module):
    """An image classifier for inputs in [0, 1], shape (B, C, H, W).

    forward(x) -> logits (B, num_classes)
    embed(x)   -> penultimate-layer embedding (B, embed_dim), the input of the last linear layer;
                  the t-SNE figures and the spatial structural loss use it.
    Subclasses implement `embed` and set `self.head` (the last linear layer) and `embed_dim`.
    """

    head: nn.Linear
    embed_dim: int

    def embed(self, x):
        raise NotImplementedError

    def forward(self, x):
        return self.head(self.embed(x))
