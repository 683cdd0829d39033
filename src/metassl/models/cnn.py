"""Plain CNNs: ConvLarge (as released with "Semi-Supervised Learning with Meta-Gradient") and a small CNN."""
from __future__ import annotations

import torch
from torch import nn

from metassl.models.registry import check_image_size, register


def conv_bn_lrelu(c_in: int, c_out: int, kernel: int = 3, padding: int = 1) -> nn.Sequential:
    """Conv2d(bias=False) -> BatchNorm2d -> LeakyReLU(0.1), the unit both nets are made of."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=1, padding=padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1, inplace=False),
    )


class ConvLarge(nn.Module):
    """ConvLarge exactly as the meta-gradient authors released it (no input noise, no top BN, default init)."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_lrelu(in_channels, 128), conv_bn_lrelu(128, 128), conv_bn_lrelu(128, 128),  # (N,128,H,W)
            nn.MaxPool2d(2), nn.Dropout2d(0.5),                                                   # (N,128,H/2,W/2)
            conv_bn_lrelu(128, 256), conv_bn_lrelu(256, 256), conv_bn_lrelu(256, 256),
            nn.MaxPool2d(2), nn.Dropout2d(0.5),                                                   # (N,256,H/4,W/4)
            conv_bn_lrelu(256, 512, 3, padding=0),                                                # (N,512,H/4-2,W/4-2)
            conv_bn_lrelu(512, 256, 1, padding=0),
            conv_bn_lrelu(256, 128, 1, padding=0),                                                # (N,128,h,w)
        )
        self.fc = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> globally average-pooled penultimate features (N, 128)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, num_classes)."""
        return self.fc(self.features(x))


class SmallCNN(nn.Module):
    """Small, CPU-fast CNN for 28x28 Fashion-MNIST: 32-32-pool-64-64-pool-128, global pool, linear."""

    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_lrelu(in_channels, 32), conv_bn_lrelu(32, 32),   # (N,32,H,W)
            nn.MaxPool2d(2), nn.Dropout2d(0.25),                     # (N,32,H/2,W/2)
            conv_bn_lrelu(32, 64), conv_bn_lrelu(64, 64),
            nn.MaxPool2d(2), nn.Dropout2d(0.25),                     # (N,64,H/4,W/4)
            conv_bn_lrelu(64, 128),                                  # (N,128,H/4,W/4)
        )
        self.fc = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> globally average-pooled penultimate features (N, 128)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, num_classes)."""
        return self.fc(self.features(x))


@register("convlarge")
def convlarge(num_classes: int, in_channels: int = 3, image_size: int = 32) -> ConvLarge:
    """ConvLarge; needs image_size >= 12 so the unpadded 3x3 conv after two pools has an output."""
    check_image_size("convlarge", image_size, 12)
    return ConvLarge(num_classes, in_channels)


@register("cnn")
def cnn(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallCNN:
    """The small default CNN; needs image_size >= 4 (two 2x2 poolings)."""
    check_image_size("cnn", image_size, 4)
    return SmallCNN(num_classes, in_channels)
