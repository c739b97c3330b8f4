"""Latent-space tools: interpolation between codes (traversals and grids join them here)."""
from __future__ import annotations

import torch


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced points on the segment from ``z0`` to ``z1``, both ends included."""
    # BEGIN REFERENCE
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device).unsqueeze(1)
    return (1 - t) * z0.reshape(1, -1) + t * z1.reshape(1, -1)
    # END REFERENCE
