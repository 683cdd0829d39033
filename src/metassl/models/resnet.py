"""ResNet-18 as in torchvision, with a CIFAR stem for small images."""
from __future__ import annotations

import torch
from torch import nn

from metassl.models.registry import register


class BasicBlock(nn.Module):
    """Post-activation block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); 1x1 conv+BN shortcut on shape change."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, c_in, H, W) -> (N, c_out, H/stride, W/stride)."""
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)  # out-of-place add, unlike torchvision's `out += identity`


class ResNet(nn.Module):
    """torchvision-style ResNet of BasicBlocks (64/128/256/512, strides 1,2,2,2).

    small_input=True swaps the ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool, /4 downsampling)
    for the CIFAR stem (3x3 stride-1 conv, no max-pool), so 32x32 images keep enough resolution.
    """

    meta_method = "jvp"   # meta_method=auto picks jvp here: fd crosses too many ReLU/max-pool kinks (resolve_method)

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False):
        super().__init__()
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        stages, c_in = [], 64
        for c_out, n, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
            stages.append(nn.Sequential(*[BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                          for i in range(n)]))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision init; no zero-init of the last BN in each block
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> globally average-pooled penultimate features (N, 512)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))   # (N, 64, H/4, W/4), or (N, 64, H, W) small
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512, H/32, W/32), or H/8 small
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> logits (N, num_classes)."""
        return self.fc(self.features(x))


@register("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, image_size: int = 224) -> ResNet:
    """ResNet-18 (11.69M parameters at 1000 classes); image_size < 64 uses the CIFAR stem (see ResNet)."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels, small_input=image_size < 64)
