"""The data sets of the study, in the signed range the sigmoid VAE is trained on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.data import load, to_signed
from genlab.experiments import reference
from genlab.experiments.harmonic.plan import Plan, data_title


@dataclass
class Dataset:
    """One dataset as tensors on the device: signed training inputs, test inputs, provenance."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    stand_in: str | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def title(self) -> str:
        return data_title(self.name, self.stand_in)


def _signed(x: torch.Tensor) -> torch.Tensor:
    # Images come as uint8; sinc tracks are already floats in [-1, 1] (value, time pairs).
    return to_signed(x) if x.dtype == torch.uint8 else x.float()


def load_dataset(name: str, plan: Plan, device: torch.device) -> Dataset:
    """Load a dataset for the grid, scaled to [-1, 1] as in the study (``fashion32``: the reference runs' data)."""
    n_test = max(plan.lower_points, plan.attack_points, 256)
    if name == "fashion32":
        train = reference.load_fashion(True, subset=plan.train_size.get(name), rgb32=True)
        test = reference.load_fashion(False, subset=n_test, rgb32=True)
    else:
        train = load(name, train=True, subset=plan.train_size.get(name))
        test = load(name, train=False, subset=n_test)
    return Dataset(name, _signed(train.x).to(device), _signed(test.x).to(device), train.stand_in)
