"""The CIFAR-10 ResNet-18 of the chapter "Adversarial attacks and defenses".

The CIFAR variant of He et al.'s ResNet-18 (as in Madry et al. 2018 and Wong et al. 2020): a 3x3
stem convolution with stride 1 and no max-pool (ImageNet's 7x7 stride-2 stem and pooling would
shrink a 32x32 image to 8x8 before the first block), four stages of two basic blocks with
``width, 2 width, 4 width, 8 width`` channels (strides 1, 2, 2, 2), global average pooling and one
linear layer. ``width=64`` is ResNet-18 (11.2 M parameters); the smoke profile uses a narrow one.

The model takes images in [0, 1] and normalises them itself (:class:`Normalize`, the first layer),
so an attack's budget ``eps`` is measured in pixel units: ``eps = 8/255`` is 8 grey levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "BasicBlock",
    "CifarResNet",
    "Normalize",
    "StridedPointwiseConv2d",
    "resnet18",
]

#: Per-channel mean and standard deviation of the CIFAR-10 training pixels in [0, 1]. (The often
#: copied (0.2023, 0.1994, 0.2010) are the means of the per-image standard deviations, not the std
#: of the pixels.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics as buffers (they move with the model)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected images (N, {self.mean.shape[1]}, H, W) in [0, 1], got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class StridedPointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution with a stride, computed in the default memory layout on the CPU.

    oneDNN 3.12 (torch 2.14.1) corrupts the heap when it computes the weight gradient of a strided
    1x1 convolution with fewer than 8 input channels in the channels-last layout on one CPU thread
    (an AVX2 AMD EPYC here; results/grading/onednn-crash.md has the reproduction). Giving that one
    convolution its input and weight in the default layout avoids the faulty kernel; the rest of
    the network keeps the faster channels-last layout, and other devices are left alone.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and self.in_channels < 8:
            plain = torch.contiguous_format  # a 1x1 weight is "contiguous" in both layouts: clone it
            return self._conv_forward(
                x.contiguous(memory_format=plain), self.weight.clone(memory_format=plain), self.bias
            )
        return super().forward(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm, added to a shortcut (a 1x1 convolution when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            conv = StridedPointwiseConv2d if stride != 1 else nn.Conv2d
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet: normalisation, 3x3 stem, four stages of basic blocks, average pool, linear.

    ``blocks`` per stage (``(2, 2, 2, 2)`` is ResNet-18), ``width`` channels in the first stage
    (doubled at each later stage), ``in_channels`` and ``num_classes`` of the data, and the
    ``mean``/``std`` that :class:`Normalize` applies to inputs in [0, 1].
    """

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        *,
        width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ):
        super().__init__()
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        if len(blocks) != 4 or any(not isinstance(b, int) or b < 1 for b in blocks):
            raise ValueError(f"blocks must be four positive ints (one per stage), got {tuple(blocks)!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if len(mean) != in_channels:
            raise ValueError(f"mean and std need {in_channels} values (in_channels), got {len(mean)}")
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            layers = [BasicBlock(c_in, c_out, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(c_out, c_out) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, num_classes)
        self.width, self.blocks = width, tuple(blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features before the linear layer, ``(N, 8 * width)``."""
        return F.adaptive_avg_pool2d(self.stages(self.stem(self.normalize(x))), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in [0, 1] -> logits ``(N, num_classes)``."""
        return self.head(self.features(x))


def resnet18(num_classes: int = 10, *, width: int = 64, **kwargs) -> CifarResNet:
    """The CIFAR ResNet-18: two basic blocks per stage; ``width=64`` is the standard size."""
    return CifarResNet((2, 2, 2, 2), width=width, num_classes=num_classes, **kwargs)
