"""Grey levels of low-bit images: 8-bit pixels to ``levels`` integer levels and back.

A 4-bit image keeps the top four bits of every 8-bit pixel: level ``k = floor(v * 16 / 256)``
for a pixel value ``v`` in 0..255, so every level covers 16 consecutive byte values.
"""

from __future__ import annotations

import torch

__all__ = ["dequantize", "quantize"]


def quantize(x: torch.Tensor, levels: int = 16) -> torch.Tensor:
    """Pixels (uint8, or floats in [0, 1] as ``TensorData.batches`` yields them) -> int64 levels in
    ``[0, levels)``, the same shape. ``levels`` must divide 256 (2, 4, ..., 256)."""
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2 or 256 % levels:
        raise ValueError(f"levels must be a power of two between 2 and 256, got {levels!r}")
    if x.dtype == torch.uint8:
        byte = x.to(torch.int64)
    elif x.is_floating_point():
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise ValueError(
                f"x must hold pixel values in [0, 1], got values in [{float(x.min()):g}, {float(x.max()):g}]"
            )
        byte = torch.round(x * 255).to(torch.int64)
    else:
        raise TypeError(f"x must be uint8 pixels or floats in [0, 1], got {x.dtype}")
    return torch.div(byte * levels, 256, rounding_mode="floor")


def dequantize(k: torch.Tensor, levels: int = 16) -> torch.Tensor:
    """Integer levels -> float32 grey values in [0, 1] (level 0 is black, ``levels - 1`` white)."""
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    return k.to(torch.float32) / (levels - 1)
