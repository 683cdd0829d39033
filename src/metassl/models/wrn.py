"""Wide ResNet (WRN-28-k) as used by MixMatch/FixMatch, following their TensorFlow code."""
from __future__ import annotations

import torch
from torch import nn

from metassl.errors import UserError
from metassl.models.registry import register

BN_MOMENTUM = 0.001  # TF decay 0.999 == PyTorch momentum 0.001 (running stats move slowly)


class BasicBlock(nn.Module):
    """Pre-activation block: x0 + conv(lrelu(bn(conv(lrelu(bn(x0)))))), 1x1-conv shortcut on shape change."""

    def __init__(self, c_in: int, c_out: int, stride: int, activate_before_residual: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, momentum=BN_MOMENTUM)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.act = nn.LeakyReLU(0.1, inplace=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if c_in != c_out or stride != 1 else None
        self.activate_before_residual = activate_before_residual  # the shortcut sees the activated input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, c_in, H, W) -> (N, c_out, H/stride, W/stride)."""
        out = self.act(self.bn1(x))
        if self.activate_before_residual:
            x = out
        out = self.conv2(self.act(self.bn2(self.conv1(out))))
        return (x if self.shortcut is None else self.shortcut(x)) + out


class WideResNet(nn.Module):
    """WRN-depth-k: 3x3 conv 16, three groups of (depth-4)/6 blocks (16k/32k/64k, strides 1,2,2), BN-LReLU, pool, fc."""

    def __init__(self, num_classes: int, in_channels: int = 3, depth: int = 28, widen_factor: int = 2):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise UserError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got depth={depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        blocks = []
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                blocks.append(BasicBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                         stride if i == 0 else 1, activate_before_residual=(g == 0 and i == 0)))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3], momentum=BN_MOMENTUM)
        self.act = nn.LeakyReLU(0.1, inplace=False)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> globally average-pooled penultimate features (N, 64k)."""
        out = self.blocks(self.conv1(x))           # (N, 64k, H/4, W/4)
        return self.act(self.bn(out)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, num_classes)."""
        return self.fc(self.features(x))


@register("wrn-28-2")
def wrn_28_2(num_classes: int, in_channels: int = 3, image_size: int = 32) -> WideResNet:
    """WRN-28-2 (~1.47M parameters), the standard CIFAR-10/SVHN SSL backbone."""
    return WideResNet(num_classes, in_channels, depth=28, widen_factor=2)


@register("wrn-28-8")
def wrn_28_8(num_classes: int, in_channels: int = 3, image_size: int = 32) -> WideResNet:
    """WRN-28-8 (~23.4M parameters), the CIFAR-100 SSL backbone."""
    return WideResNet(num_classes, in_channels, depth=28, widen_factor=8)
