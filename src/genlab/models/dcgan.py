"""The DCGAN of the chapter "DCGAN": a generator and a discriminator for 3 x 32 x 32 images.

Generator (code size 64 by default)::

    z (N, 64) -> Linear(64, 4*4*128) -> reshape (N, 128, 4, 4)
      -> BatchNorm2d(128), LeakyReLU, ConvTranspose2d(128, 64, 4, stride 2, padding 1)   # 8 x 8
      -> BatchNorm2d(64),  LeakyReLU, ConvTranspose2d(64, 32, 4, stride 2, padding 1)    # 16 x 16
      -> BatchNorm2d(32),  LeakyReLU, ConvTranspose2d(32, 3, 4, stride 2, padding 1)     # 32 x 32
      -> Sigmoid: pixels in (0, 1)

Discriminator::

    x (N, 3, 32, 32) -> Conv2d(3, 32, 4, 2, 1), LeakyReLU                  # 16 x 16, no BatchNorm
      -> Conv2d(32, 64, 4, 2, 1), BatchNorm2d(64), LeakyReLU              # 8 x 8
      -> Conv2d(64, 128, 4, 2, 1), BatchNorm2d(128), LeakyReLU            # 4 x 4
      -> flatten -> Linear(2048, 1): one logit per image (no sigmoid)

The layers are those of the course's seed, with one repair: the seed's transposed convolutions
had no padding, and a ``ConvTranspose2d`` with kernel 4 and stride 2 maps a side ``s`` to
``2 s + 2`` without padding (4 -> 10 -> 22 -> 46), so its generator made 46 x 46 images that no
32 x 32 discriminator accepts. ``padding=1`` gives ``2 s`` (4 -> 8 -> 16 -> 32).

Options of the discriminator: ``spectral_norm=True`` wraps every convolution and the linear layer
in ``torch.nn.utils.parametrizations.spectral_norm``; ``batch_norm=False`` drops its BatchNorm
layers (an SN-GAN discriminator has none); ``first_batch_norm=True`` adds a BatchNorm after the
first convolution, for the chapter's BatchNorm experiment.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

CODE_SIZE = 64
IMAGE_SHAPE = (3, 32, 32)


def transposed_conv_side(side: int, kernel: int = 4, stride: int = 2, padding: int = 0) -> int:
    """Output side of a ``ConvTranspose2d`` (no output padding, dilation 1): (s - 1) * stride - 2 p + k."""
    for name, value in (("side", side), ("kernel", kernel), ("stride", stride), ("padding", padding)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "padding" else 1):
            raise ValueError(
                f"{name} must be a {'non-negative' if name == 'padding' else 'positive'} int, got {value!r}"
            )
    return (side - 1) * stride - 2 * padding + kernel


class Generator(nn.Module):
    """Codes (N, code_size) -> images (N, channels, 32, 32) with pixels in (0, 1)."""

    def __init__(self, code_size: int = CODE_SIZE, channels: int = 3):
        super().__init__()
        if not isinstance(code_size, int) or isinstance(code_size, bool) or code_size < 1:
            raise ValueError(f"code_size must be a positive int, got {code_size!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.code_size = code_size
        self.channels = channels
        self.fc = nn.Linear(code_size, 4 * 4 * 128)
        self.upsample = nn.Sequential(
            nn.BatchNorm2d(128),
            nn.LeakyReLU(),
            nn.ConvTranspose2d(128, 64, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.LeakyReLU(),
            nn.ConvTranspose2d(64, 32, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.LeakyReLU(),
            nn.ConvTranspose2d(32, channels, kernel_size=4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.code_size:
            raise ValueError(f"the generator takes codes of shape (N, {self.code_size}), got {tuple(z.shape)}")
        return self.upsample(self.fc(z).reshape(-1, 128, 4, 4))


class Discriminator(nn.Module):
    """Images (N, channels, 32, 32) -> one real-vs-fake logit per image, shape (N, 1)."""

    def __init__(
        self, channels: int = 3, *, spectral_norm: bool = False, batch_norm: bool = True, first_batch_norm: bool = False
    ):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.channels = channels
        self.spectral_norm = bool(spectral_norm)

        def weighted(layer: nn.Module) -> nn.Module:
            return _spectral_norm(layer) if spectral_norm else layer

        def norm(width: int, wanted: bool) -> list[nn.Module]:
            return [nn.BatchNorm2d(width)] if wanted else []

        self.downsample = nn.Sequential(
            weighted(nn.Conv2d(channels, 32, kernel_size=4, stride=2, padding=1)),
            *norm(32, first_batch_norm),
            nn.LeakyReLU(),
            weighted(nn.Conv2d(32, 64, kernel_size=4, stride=2, padding=1)),
            *norm(64, batch_norm),
            nn.LeakyReLU(),
            weighted(nn.Conv2d(64, 128, kernel_size=4, stride=2, padding=1)),
            *norm(128, batch_norm),
            nn.LeakyReLU(),
        )
        self.fc = weighted(nn.Linear(4 * 4 * 128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.channels, 32, 32):
            raise ValueError(
                f"the discriminator takes images of shape (N, {self.channels}, 32, 32), got {tuple(x.shape)}"
            )
        return self.fc(self.downsample(x).flatten(1))
