"""MLP for tabular data (or flattened images)."""
from __future__ import annotations

import torch
from torch import nn

from metassl.models.registry import register


class MLP(nn.Module):
    """in_features -> [Linear -> BatchNorm1d -> ReLU (-> Dropout)] per hidden size -> fc; inputs are flattened
    first. dropout: probability after each hidden layer (0 = none; the estimator's default for small tables)."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (256, 256), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=False)]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            in_features = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(in_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) or (N, C, H, W) -> last hidden activations (N, hidden[-1])."""
        return self.body(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) or (N, C, H, W) -> logits (N, num_classes)."""
        return self.fc(self.features(x))


@register("mlp")
def mlp(num_classes: int, in_channels: int = 3, image_size: int = 32) -> MLP:
    """MLP on in_channels*image_size**2 inputs; for D tabular features use in_channels=D, image_size=1."""
    return MLP(in_channels * image_size * image_size, num_classes)
