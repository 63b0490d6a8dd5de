"""The paper's networks (LeNet, CIFAR-style VGG and ResNet18) for 32x32 inputs, plus a small MLP.

Modules are registered in the order the forward pass calls them, so
``layers.layer_groups(model)`` lists Conv/Linear layers in forward order without a
forward pass. ``width`` scales every channel / hidden size (rounded, at least 1) so
the same architectures fit a CPU budget. Default PyTorch initialisation throughout.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


LENET_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu,
                                                                        "tanh": torch.tanh}


class LeNet(nn.Module):
    """LeNet-5 as in the paper: conv 6@5x5, ReLU, maxpool 2, conv 16@5x5, ReLU, maxpool 2, fc 120, fc 84, fc C.

    Five weight layers; 61,706 parameters for 1 input channel, 10 classes, width 1. ``activation``
    "gelu" or "tanh" gives a network that is not piecewise linear in one layer's weights, so its
    layer blocks have a non-zero residual H_l (with ReLU and max-pooling H_l = 0 identically).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0,
                 activation: str = "relu") -> None:
        super().__init__()
        if activation not in LENET_ACTIVATIONS:
            raise ValueError(f"LeNet: unknown activation {activation!r}; valid: {', '.join(LENET_ACTIVATIONS)}")
        self.act = LENET_ACTIVATIONS[activation]
        c1, c2 = _scaled(6, width), _scaled(16, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc1 = nn.Linear(c2 * 5 * 5, _scaled(120, width))  # 32 -> 28 -> 14 -> 10 -> 5
        self.fc2 = nn.Linear(self.fc1.out_features, _scaled(84, width))
        self.fc3 = nn.Linear(self.fc2.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.act(self.conv1(x)), 2)
        x = F.max_pool2d(self.act(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR-style VGG: 3x3 convs (optionally + BatchNorm) with ReLU and 5 maxpools, then one Linear.

    After five 2x2 pools a 32x32 input is 1x1, so the classifier is the single
    Linear(512 * width -> C) common in CIFAR code (not ImageNet's 3-layer head):
    vgg11 has 8 conv + 1 linear = 9 weight layers, vgg13 has 10 + 1 = 11.
    """

    def __init__(self, cfg_name: str = "vgg11", in_channels: int = 3, num_classes: int = 10,
                 batch_norm: bool = False, width: float = 1.0) -> None:
        super().__init__()
        if cfg_name not in VGG_CONFIGS:
            raise ValueError(f"unknown VGG config {cfg_name!r}; valid: {', '.join(VGG_CONFIGS)}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG_CONFIGS[cfg_name]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = _scaled(int(item), width)
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg11(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> VGG:
    """VGG11 without BatchNorm."""
    return VGG("vgg11", in_channels, num_classes, batch_norm=False, width=width)


def vgg11_bn(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> VGG:
    """VGG11 with BatchNorm after every conv."""
    return VGG("vgg11", in_channels, num_classes, batch_norm=True, width=width)


def vgg13(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> VGG:
    """VGG13 without BatchNorm."""
    return VGG("vgg13", in_channels, num_classes, batch_norm=False, width=width)


def vgg13_bn(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> VGG:
    """VGG13 with BatchNorm after every conv."""
    return VGG("vgg13", in_channels, num_classes, batch_norm=True, width=width)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, plus a 1x1 conv+BN shortcut when the shape changes.

    The shortcut is registered, and called, after conv2, so registration order is forward order.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet18: 3x3 stride-1 stem (no maxpool), BasicBlocks [2, 2, 2, 2], avg pool, Linear.

    Weight layers: 1 stem + 16 block convs + 3 shortcut convs + 1 linear = 21.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        planes = [_scaled(p, width) for p in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_planes, p, stride), BasicBlock(p, p, 1)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


class MLP(nn.Module):
    """Fully connected net on the flattened input: ``depth`` Linear layers, ``hidden`` units between them.

    The activation defaults to tanh: smooth, so the Hessian exists everywhere and, unlike
    with ReLU, the residual part H of a single layer's block is not identically zero.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 64, depth: int = 3,
                 activation: str = "tanh") -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLP depth (number of Linear layers) must be >= 1, got {depth}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(_ACTIVATIONS)}")
        sizes = [in_features] + [hidden] * (depth - 1) + [num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < depth - 1:
                layers.append(_ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


MODELS: tuple[str, ...] = ("lenet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "resnet18", "mlp")


def build_model(name: str, in_channels: int, num_classes: int, width: float = 1.0, **kw) -> nn.Module:
    """The network ``name`` (one of MODELS) for 32x32 inputs with ``in_channels`` channels and ``num_classes`` outputs.

    For "mlp", ``width`` scales ``hidden`` (default 64); extra keywords: ``hidden``,
    ``depth``, ``activation``, ``input_size`` (side of the square input, default 32).
    "lenet" takes ``activation`` ("relu", "gelu", "tanh"); other models take no extra keywords.
    """
    key = name.lower()
    if key == "mlp":
        input_size = kw.pop("input_size", 32)
        hidden = _scaled(kw.pop("hidden", 64), width)
        return MLP(in_channels * input_size * input_size, num_classes, hidden=hidden, **kw)
    if key == "lenet" and set(kw) <= {"activation"}:
        return LeNet(in_channels=in_channels, num_classes=num_classes, width=width, **kw)
    if kw:
        raise TypeError(f"model {name!r} takes no extra arguments, got {sorted(kw)}")
    constructors: dict[str, Callable[..., nn.Module]] = {
        "lenet": LeNet, "vgg11": vgg11, "vgg11_bn": vgg11_bn, "vgg13": vgg13, "vgg13_bn": vgg13_bn,
        "resnet18": ResNet18,
    }
    if key not in constructors:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return constructors[key](in_channels=in_channels, num_classes=num_classes, width=width)


def num_parameters(model: nn.Module) -> int:
    """Number of trainable scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
