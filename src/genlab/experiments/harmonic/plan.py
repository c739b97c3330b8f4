"""What a run trains: the sweeps, datasets, seeds and sizes of a profile, and the constants the tables use."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

SWEEPS: dict[str, tuple[float, ...]] = {"sigma_enc": (1.0, 0.5, 0.1), "sigma_n": (1.0, 0.5, 0.0)}
NETWORK = {"sigma_enc": "decoder", "sigma_n": "encoder"}  # which half each sweep measures
SIGMA_ENC_RIGHT = 0.5  # encoder std of the input-noise sweep
LATENT = {"sinc": 1, "cifar10": 64, "celeba": 64, "fashion32": 64}
TITLES = {"sinc": "sinc(5t)", "cifar10": "CIFAR-10", "celeba": "CelebA 64x64", "fashion32": "Fashion-MNIST 3x32x32"}
#: The data sets the paper and the 2022 report measured: only runs on these are set beside their numbers.
PUBLISHED = ("sinc", "cifar10", "celeba")
SYMBOL = {"sigma_enc": "σ_enc", "sigma_n": "σ_N"}
ESTIMATORS = ("lower", "lipsdp", "eclipse", "product")
LABELS = {
    "lower": "Jacobian lower bound",
    "lipsdp": "LipSDP-neuron",
    "eclipse": "ECLipsE-Fast",
    "product": "product bound",
}
# All four are valid bounds, computed in float64; this slack only absorbs rounding.
ORDER_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Plan:
    """How much work one profile does: datasets, seeds, sizes, epochs and estimator budgets."""

    profile: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: Mapping[str, int]
    train_size: Mapping[str, int | None]
    batch_size: Mapping[str, int]
    hidden: int = 256
    lr: float = 1e-3
    lower_points: int = 64  # data points (and as many prior draws) for the Jacobian lower bound
    lower_steps: int = 100  # gradient-ascent steps of the lower bound from each point
    power_iters: int = 100  # power iterations per point when a notebook's own Jacobian norm is used
    lipsdp_method: str = "chordal"
    lipsdp_options: Mapping[str, float] | None = None  # SCS options; the bound is certified whatever they are
    attack_dataset: str = "cifar10"
    attack_points: int = 8
    attack_radii: tuple[float, ...] = (10.0, 20.0)
    attack_steps: int = 200
    attack_restarts: int = 4
    attack_lr: float = 0.5  # step length as a fraction of the radius
    lbfgs_iters: int = 200
    defect_seeds: tuple[int, ...] = (0,)
    defect_dataset: str = "sinc"
    threads: int | None = None  # torch CPU threads while the plan runs (None: leave torch's setting)
    notes: tuple[str, ...] = field(default_factory=tuple)


ALL = ("sinc", "cifar10", "celeba")


def data_title(name: str, stand_in: str | None = None) -> str:
    """What tables and figures call a data set: a stand-in by what it is, never by the data it replaces."""
    if stand_in:
        return stand_in.replace("fashion-mnist", "Fashion-MNIST") + " (smoke stand-in)"
    return TITLES[name]


def comparable(name: str, stand_in: str | None = None) -> bool:
    """Whether a run's numbers may stand beside the published ones: same data set, no stand-in."""
    return name in PUBLISHED and not stand_in


def make_plan(
    profile: str, *, grading: bool = False, datasets: Sequence[str] | None = None, seeds: Sequence[int] | None = None
) -> Plan:
    """The plan of a profile (``smoke``, ``reference``, ``full`` or ``full-dry``); ``grading`` shrinks smoke.

    ``reference`` (:mod:`genlab.experiments.reference`) measures real Fashion-MNIST padded to 3x32x32
    (``fashion32``), longer and wider than smoke, in about a quarter of an hour on a 2-core CPU; the
    paper measured other data, so its numbers are shown apart, as context.
    """
    if profile == "reference":
        plan = Plan(
            profile="reference",
            datasets=("fashion32",),
            seeds=(0, 1, 2),
            epochs={"fashion32": 25},
            train_size={"fashion32": 8192},
            batch_size={"fashion32": 64},
            hidden=64,
            lower_points=32,
            lower_steps=20,
            power_iters=50,
            lipsdp_options={"eps_abs": 1e-3, "eps_rel": 1e-3},
            attack_dataset="fashion32",
            attack_points=8,
            attack_steps=200,
            attack_restarts=4,
            lbfgs_iters=100,
            defect_dataset="fashion32",
            threads=1,
            notes=(
                "reference profile: real Fashion-MNIST padded to 3x32x32 (CIFAR-10 is not available offline), "
                "hidden width 64 instead of 256, 8192 training images, 25 epochs, batches of 64, three seeds",
                "the paper's and the 2022 report's numbers are for CIFAR-10 and CelebA: other data, shown apart",
                "one CPU thread: these matrices are small, and on shared cores more threads only contend",
            ),
        )
    elif profile in ("full", "full-dry"):
        plan = Plan(
            profile="full",
            datasets=ALL,
            seeds=(0, 1, 2),
            epochs={"sinc": 100, "cifar10": 200, "celeba": 200},
            train_size={"sinc": None, "cifar10": None, "celeba": 51_200},
            batch_size=dict.fromkeys(ALL, 256),
            attack_points=32,
            attack_steps=500,
            attack_restarts=8,
            lbfgs_iters=500,
            defect_seeds=(0, 1, 2),
            defect_dataset="cifar10",
        )
        if profile == "full-dry":
            plan = replace(
                plan,
                profile="full-dry",
                seeds=(0,),
                epochs=dict.fromkeys(ALL, 1),
                lower_points=2,
                lower_steps=2,
                power_iters=3,
                # the smoke profile's tolerances: SCS stopped after a few iterations calls some of these
                # LMIs infeasible, and LipSDP then has no bound to certify
                lipsdp_options={"eps_abs": 1e-3, "eps_rel": 1e-3},
                attack_points=1,
                attack_steps=2,
                attack_restarts=1,
                lbfgs_iters=2,
                defect_seeds=(0,),
                notes=(
                    "full-dry run: the full plan's networks and loaders on small data folders, one seed, "
                    "one epoch, estimator and attack budgets of a few steps: the numbers mean nothing; "
                    "LipSDP on the full-width networks still takes minutes per network on a CPU",
                ),
            )
    elif profile == "smoke" and grading:
        plan = Plan(
            profile="smoke",
            datasets=("sinc",),
            seeds=(0,),
            epochs={"sinc": 1},
            train_size={"sinc": 256},
            batch_size={"sinc": 64},
            hidden=16,
            lower_points=4,
            lower_steps=5,
            power_iters=10,
            attack_dataset="sinc",
            attack_points=1,
            attack_radii=(1.0, 2.0),
            attack_steps=10,
            attack_restarts=1,
            lbfgs_iters=10,
            threads=1,
            notes=("grading mode: one seed, one epoch, width 16: the numbers mean nothing",),
        )
    elif profile == "smoke":
        plan = Plan(
            profile="smoke",
            datasets=("sinc", "cifar10"),
            seeds=(0, 1, 2),
            epochs={"sinc": 4, "cifar10": 10, "celeba": 10},
            train_size=dict.fromkeys(ALL, 2048),
            batch_size={"sinc": 64, "cifar10": 32, "celeba": 32},
            hidden=32,
            lower_points=16,
            lower_steps=10,
            power_iters=20,
            lipsdp_options={"eps_abs": 1e-3, "eps_rel": 1e-3},
            attack_points=4,
            attack_steps=60,
            attack_restarts=2,
            lbfgs_iters=60,
            threads=1,
            defect_dataset="cifar10",
            notes=(
                "smoke profile: hidden width 32 instead of 256, 2048 training examples, 4 (sinc) or 10 epochs, "
                "batches of 64 (sinc) or 32 instead of 256 so that the few seconds of training take enough steps",
                "CIFAR-10 and CelebA are replaced by Fashion-MNIST padded to 3x32x32 when absent; CelebA's "
                "stand-in holds the same images as CIFAR-10's, so smoke leaves it out unless asked for",
                "one CPU thread: these matrices are small, and on shared CI cores more threads only contend",
            ),
        )
    else:
        raise ValueError(f"unknown profile {profile!r}; use 'smoke', 'reference', 'full' or 'full-dry'")
    if datasets:
        unknown = sorted(set(datasets) - set(LATENT))
        if unknown:
            raise ValueError(f"unknown datasets {unknown}; choose from {sorted(LATENT)}")
        plan = replace(plan, datasets=tuple(datasets))
    if seeds:
        plan = replace(plan, seeds=tuple(int(s) for s in seeds))
    return plan


def with_plan_threads(fn: Callable) -> Callable:
    """Decorate ``fn(plan, ...)`` to run under ``plan.threads``."""

    @functools.wraps(fn)
    def wrapper(plan: Plan, *args, **kwargs):
        with torch_threads(plan.threads):
            return fn(plan, *args, **kwargs)

    return wrapper


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (unchanged for None), then restore the old number."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
