"""Latent-space tools: interpolation, manifold grids at normal quantiles, the most variable code
dimensions, traversals and class-mean arithmetic.

Grids of codes are laid out for ``image_grid(images, nrow=n)``: entry ``r * n + c`` is shown in row
``r`` (from the top) and column ``c`` (from the left). The first coordinate grows from left to right
and the second from bottom to top, like the axes of a scatter plot of the codes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.stats import norm


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` evenly spaced points on the segment from ``z0`` to ``z1``, both ends included."""
    # BEGIN REFERENCE
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device).unsqueeze(1)
    return (1 - t) * z0.reshape(1, -1) + t * z1.reshape(1, -1)
    # END REFERENCE


def manifold_codes(
    n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """An ``n`` x ``n`` grid of 2-D codes at the normal quantiles of the probabilities
    ``(i + 1/2) / n``, i = 0 .. n-1: shape (n * n, 2), entry ``r * n + c`` holding
    ``(q[c], q[n - 1 - r])`` (first coordinate left to right, second bottom to top).

    Each code sits in the middle of a cell of probability ``1 / n^2`` under N(0, I), so the grid
    covers the prior's mass evenly instead of a box of fixed width.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    # BEGIN REFERENCE
    probs = (torch.arange(n, dtype=torch.float64, device="cpu") + 0.5) / n
    q = torch.as_tensor(norm.ppf(probs.numpy()), dtype=dtype, device=device)
    horizontal = q.repeat(n)  # column c -> q[c]
    vertical = q.flip(0).repeat_interleave(n)  # row r -> q[n - 1 - r]
    return torch.stack([horizontal, vertical], dim=1)
    # END REFERENCE


def top_variance_dims(codes: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Indices (int64, shape (k,)) of the ``k`` columns of ``codes`` (N, D) with the largest
    variance over the N examples, the largest first."""
    if codes.dim() != 2:
        raise ValueError(f"codes must have shape (N, D), got {tuple(codes.shape)}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= codes.shape[1]:
        raise ValueError(f"k must be an int between 1 and D = {codes.shape[1]}, got {k!r}")
    # BEGIN REFERENCE
    spread = codes.var(dim=0)
    return torch.topk(spread, k).indices
    # END REFERENCE


def traversal_codes(
    nz: int,
    dims: Sequence[int],
    steps: int = 7,
    low: float = 0.05,
    high: float = 0.95,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A ``steps`` x ``steps`` grid of codes of size ``nz`` (shape (steps * steps, nz)) that are zero
    everywhere but in the two dimensions ``dims = (i, j)``: those take the normal quantiles ``q``
    of ``steps`` probabilities evenly spaced from ``low`` to ``high``. Entry ``r * steps + c`` has
    ``z[i] = q[c]`` (left to right) and ``z[j] = q[steps - 1 - r]`` (bottom to top).

    With an odd ``steps`` and ``low + high = 1`` the middle quantile is 0: the middle row varies
    ``z[i]`` alone and the middle column ``z[j]`` alone.
    """
    if len(dims) != 2 or int(dims[0]) == int(dims[1]) or not all(0 <= int(d) < nz for d in dims):
        raise ValueError(f"dims must be two different dimensions in [0, {nz}), got {list(dims)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"need 0 < low < high < 1, got low={low}, high={high}")
    # BEGIN REFERENCE
    probs = torch.linspace(low, high, steps, dtype=torch.float64, device="cpu")
    q = torch.as_tensor(norm.ppf(probs.numpy()), dtype=dtype, device=device)
    codes = torch.zeros(steps * steps, nz, dtype=dtype, device=device)
    codes[:, int(dims[0])] = q.repeat(steps)
    codes[:, int(dims[1])] = q.flip(0).repeat_interleave(steps)
    return codes
    # END REFERENCE


def toward_class_mean(
    z: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor, target: int, alphas: torch.Tensor
) -> torch.Tensor:
    """Move the code ``z`` (nz,) towards the mean code of class ``target``: one row
    ``z + a * (m - z)`` per ``a`` in ``alphas`` (A,), where ``m`` is the mean of the rows of
    ``codes`` (M, nz) whose label in ``labels`` (M,) is ``target``. Shape (A, nz)."""
    if codes.dim() != 2 or z.shape != codes.shape[1:]:
        raise ValueError(
            f"z must have shape (nz,) and codes (M, nz), got z {tuple(z.shape)} and codes {tuple(codes.shape)}"
        )
    if labels.shape != codes.shape[:1]:
        raise ValueError(f"labels must have shape ({len(codes)},), one per code, got {tuple(labels.shape)}")
    if not bool((labels == target).any()):
        raise ValueError(f"target={target!r}: no code has this label")
    # BEGIN REFERENCE
    mean = codes[labels == target].mean(dim=0)
    return z + alphas.to(z.dtype).unsqueeze(1) * (mean - z)
    # END REFERENCE
