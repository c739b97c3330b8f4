"""Lipschitz estimates of a network: lower bound, LipSDP, ECLipsE-Fast and the product bound, cached beside it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genlab.experiments.harmonic.data import Dataset
from genlab.experiments.harmonic.plan import ESTIMATORS, ORDER_TOLERANCE, Plan
from genlab.experiments.harmonic.training import _code_fingerprint, estimates_path
from genlab.models import harmonic as H
from genlab.train import atomic_write

# Lipschitz estimates


def _cpu64(net: nn.Sequential) -> nn.Sequential:
    """A float64 CPU copy: the SDP and the norms want double precision."""
    import copy

    return copy.deepcopy(net).to("cpu", torch.float64).eval()


def with_relu(net: nn.Sequential) -> nn.Sequential:
    """The same weights with every sigmoid replaced by a ReLU: LipSDP then assumes slopes in [0, 1].

    LipSDP only sees the weights and the slope interval of each activation, so this is exactly the
    2022 report's mistake of bounding the sigmoid's slope by 1 instead of 1/4.
    """
    layers = [nn.ReLU() if isinstance(m, nn.Sigmoid) else m for m in _cpu64(net)]
    return nn.Sequential(*layers)


def probe_points(model: H.HarmonicVAE, network: str, data: Dataset, n: int) -> torch.Tensor:
    """Inputs at which the lower bound looks: test inputs (encoder), or their codes and prior draws (decoder)."""
    # sinc has a single test track, so training inputs fill up the probe set.
    x = torch.cat([data.test[:n], data.train[:n]])[:n].flatten(1)
    if network == "encoder":
        return x.detach().cpu().double()
    with torch.no_grad():
        mu = model.encode(x)
    prior = torch.randn(n, model.latent, generator=torch.Generator().manual_seed(0)).to(mu)
    return torch.cat([mu, prior]).cpu().double()


@dataclass(frozen=True)
class Bounds:
    """The chapter's own estimators, where a notebook supplies them (they are graded exercises there).

    ``product(net)`` is the product bound; ``jacobian_norm(net, x, iters=...)`` the Jacobian's spectral
    norm at one point by power iteration, whose maximum over the probe points is then the lower bound.
    Left out, genlab's own are used: its product bound, and its lower bound that also climbs from each point by gradient
    ascent (tighter; the command line's tables use it).
    """

    product: Callable[[nn.Module], float] | None = None
    jacobian_norm: Callable[..., float] | None = None

    def key(self) -> dict[str, str]:
        return {
            "product": _code_fingerprint(self.product) if self.product else "genlab",
            "lower": _code_fingerprint(self.jacobian_norm) if self.jacobian_norm else "ascent",
        }


def cached_estimate(
    checkpoint: Path, network: str, net: nn.Sequential, points: torch.Tensor, plan: Plan, bounds: Bounds = Bounds()
) -> dict[str, float]:
    """:func:`estimate`, remembered beside the checkpoint per network half and estimator settings.

    Only missing estimators are computed, so adding one does not redo the expensive LipSDP solves.
    """
    key = json.dumps(
        {
            "network": network,
            "points": plan.lower_points,
            "steps": plan.lower_steps,
            "power_iters": plan.power_iters if bounds.jacobian_norm else None,
            "method": plan.lipsdp_method,
            "options": dict(plan.lipsdp_options or {}),
            **bounds.key(),
        },
        sort_keys=True,
    )
    path = estimates_path(checkpoint)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if any(name not in known.get(key, {}) for name in ESTIMATORS):
        known[key] = estimate(net, points, plan, known.get(key), bounds)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(known, indent=1)))
    return known[key]


def estimate(
    net: nn.Sequential,
    points: torch.Tensor,
    plan: Plan,
    known: Mapping[str, float] | None = None,
    bounds: Bounds = Bounds(),
) -> dict[str, float]:
    """Every estimator of ``ESTIMATORS`` on ``net`` with its run time (those in ``known`` kept); checks their order."""
    from genlab import lipschitz

    net = _cpu64(net)
    out: dict[str, float] = dict(known or {})
    if bounds.jacobian_norm is not None:
        lower = lambda: max(float(bounds.jacobian_norm(net, p, iters=plan.power_iters)) for p in points)
    else:
        lower = lambda: lipschitz.jacobian_lower_bound(
            net, points, steps=plan.lower_steps, generator=torch.Generator().manual_seed(0)
        )
    for name, fn in (
        ("lower", lower),
        (
            "lipsdp",
            lambda: lipschitz.lipsdp(
                net, variant="neuron", method=plan.lipsdp_method, solver_options=plan.lipsdp_options
            ),
        ),
        ("eclipse", lambda: lipschitz.eclipse_fast_bound(net)),
        ("product", lambda: (bounds.product or lipschitz.spectral_product_bound)(net)),
    ):
        if name in out:
            continue
        t0 = time.perf_counter()
        out[name] = float(fn())
        out[f"{name}_s"] = time.perf_counter() - t0
    check_order(out["lower"], out["lipsdp"], out["product"], out["eclipse"])
    return out


def check_order(lower: float, lipsdp: float, product: float, eclipse: float) -> None:
    """Raise AssertionError unless lower <= LipSDP <= product and lower <= ECLipsE-Fast (up to rounding)."""
    slack = 1 + ORDER_TOLERANCE
    if not lower <= lipsdp * slack:
        raise AssertionError(f"lower bound {lower:.6g} exceeds LipSDP {lipsdp:.6g}")
    if not lipsdp <= product * slack:
        raise AssertionError(f"LipSDP {lipsdp:.6g} exceeds the product bound {product:.6g}")
    if not lower <= eclipse * slack:
        raise AssertionError(f"lower bound {lower:.6g} exceeds ECLipsE-Fast {eclipse:.6g}")
