"""Defenses against adversarial examples, and the accuracy that measures them.

* :func:`accuracy_under_attack` -- the fraction of examples still classified correctly after an
  attack (the clean accuracy without one): predictions in eval mode under ``torch.no_grad``.
* :func:`fgsm_loss` -- Goodfellow et al.'s (2015) adversarial objective
  ``alpha J(x) + (1 - alpha) J(x + eps sign(grad_x J))``.
* :func:`adversarial_batch` -- the batch with its adversarial examples added (Madry et al. 2018
  train on PGD examples; adding them to the clean ones keeps some clean accuracy).
* :func:`fgsm_rs_loss` -- "Fast is better than free" (Wong, Rice and Kolter 2020): the loss on FGSM
  examples taken from a uniformly random start, with a step ``alpha`` a little larger than ``eps``.

The first three are graded exercises of the chapter "adversarial" (bodies between the reference
markers). Convention of the chapter: adversarial examples are always built against the model as it
is deployed, in eval mode (BatchNorm with its running statistics, which the attack leaves alone),
whatever mode the caller is in; every function hands the model back in the modes it came in.
Losses are computed in the caller's mode (train mode while training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from genlab.attacks import _eval_mode, fgsm, pgd

__all__ = ["accuracy_under_attack", "adversarial_batch", "fgsm_loss", "fgsm_rs_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: An attack for :func:`adversarial_batch` and :func:`accuracy_under_attack`: ``(model, x, y) -> x_adv``.
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def accuracy_under_attack(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    attack: Attack | None = None,
) -> float:
    """The fraction of the examples in ``batches`` that ``model`` classifies correctly after ``attack``.

    For every batch ``(x, y)``: ``x_adv = attack(model, x, y)`` (``x`` itself without an attack),
    then the predicted class ``argmax model(x_adv)``. The attack runs with gradients enabled; the
    predictions are made under ``torch.no_grad()``; everything happens with the model in eval mode.
    Returns a Python float in [0, 1].
    """
    # BEGIN REFERENCE
    correct, total = 0, 0
    with _eval_mode(model):
        for x, y in batches:
            if attack is not None:
                x = attack(model, x, y)
            with torch.no_grad():
                correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    if total == 0:
        raise ValueError("batches held no examples")
    return correct / total
    # END REFERENCE


def fgsm_loss(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float = 0.5,
    attack: Callable[..., torch.Tensor] = fgsm,
) -> torch.Tensor:
    """Goodfellow et al.'s adversarial objective ``alpha * J(x) + (1 - alpha) * J(x_adv)``.

    ``J(x) = loss_fn(model(x), y)``; ``x_adv = attack(model, loss_fn, x, y, eps)`` (FGSM by default),
    built with the model in eval mode and detached: it is a fixed input, not a function of the
    weights. Both J are computed in the caller's mode (train mode during training), each on its own
    batch. Returns the loss, a tensor ready for ``backward()``.
    """
    _check_fraction("alpha", alpha)
    # BEGIN REFERENCE
    with _eval_mode(model):
        x_adv = attack(model, loss_fn, x, y, eps)
    clean = loss_fn(model(x), y)
    adversarial = loss_fn(model(x_adv.detach()), y)
    return alpha * clean + (1 - alpha) * adversarial
    # END REFERENCE


def adversarial_batch(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch with its adversarial examples added: ``(cat([x, x_adv]), cat([y, y]))``.

    ``x_adv = attack(model, x, y)`` is built with the model in eval mode (and gradients enabled: the
    attack needs them) and detached; the model is handed back in its modes.
    """
    # BEGIN REFERENCE
    with _eval_mode(model), torch.enable_grad():
        x_adv = attack(model, x, y)
    return torch.cat([x, x_adv.detach()]), torch.cat([y, y])
    # END REFERENCE


def fgsm_rs_loss(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    attack: Callable[..., torch.Tensor] = pgd,
) -> torch.Tensor:
    """FGSM training with a random start (Wong, Rice and Kolter 2020): ``J(x_adv)`` only.

    ``x_adv = attack(model, loss_fn, x, y, eps=eps, alpha=alpha, steps=1, random_start=True)``: one
    signed-gradient step of size ``alpha`` from a uniformly random point of the eps-box, projected
    back into it (PGD with one step). Wong et al. take ``alpha = 1.25 eps``; plain FGSM (start at
    ``x``, ``alpha = eps``) tends to overfit catastrophically. The examples are built in eval mode,
    the loss in the caller's mode.
    """
    if not eps > 0 or not alpha > 0:
        raise ValueError(f"eps and alpha must be positive, got eps={eps}, alpha={alpha}")
    with _eval_mode(model):
        x_adv = attack(model, loss_fn, x, y, eps=eps, alpha=alpha, steps=1, random_start=True)
    return loss_fn(model(x_adv.detach()), y)
