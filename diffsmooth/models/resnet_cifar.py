"""The CIFAR ResNet of Cohen et al. / SmoothAdv (`archs/cifar_resnet.py`, BasicBlock variant).

conv3x3(3->16), BN, ReLU; three stages of BasicBlocks (16/32/64 planes, strides 1/2/2, n = (depth-2)/6
blocks each; the first block of stages 2 and 3 has downsample = Sequential(conv1x1 stride 2, BN));
AvgPool2d(8); Linear(64 -> classes). Attribute names give the checkpoint keys (`conv1`, `layer2.0.downsample.0`, ...).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"BasicBlock CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.inplanes = 16
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, n)
        self.layer2 = self._make_layer(32, n, stride=2)
        self.layer3 = self._make_layer(64, n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64 * BasicBlock.expansion, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # He init (fan_out) for training from scratch; irrelevant when loading a checkpoint.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def fold_batchnorm(self) -> "CifarResNet":
        """Fold every eval-mode BatchNorm into the convolution before it (conv weight * gamma/sqrt(var+eps),
        bias beta - mean*gamma/sqrt(var+eps)) and replace the BatchNorm by Identity: one kernel instead of
        two per conv on a GPU. Inference only (the statistics are frozen); the state_dict changes, so load
        checkpoints first. Same function, other float rounding (~1e-6 relative on the logits)."""
        if self.training:
            raise RuntimeError("fold_batchnorm needs eval mode (frozen BatchNorm statistics): call .eval() first")
        pairs = [(self, "conv1", "bn1")]
        for module in self.modules():
            if isinstance(module, BasicBlock):
                pairs += [(module, "conv1", "bn1"), (module, "conv2", "bn2")]
                if module.downsample is not None:
                    pairs.append((module.downsample, "0", "1"))
        for parent, conv, bn in pairs:
            bn_module = getattr(parent, bn)
            if isinstance(bn_module, nn.BatchNorm2d):
                setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), bn_module))
                setattr(parent, bn, nn.Identity())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


def cifar_resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


def cifar_resnet110(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(110, num_classes)
