"""The training harness every chapter uses: epochs, progress, loss history, checkpoints."""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.losses import bernoulli_nll
from genlab.progress import progress

Batch = Any
StepResult = torch.Tensor | Mapping[str, torch.Tensor]


@dataclass
class History:
    """Per-step and per-epoch values of every metric a training step reports."""

    steps: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    epochs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def log_step(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.steps[key].append(float(value))

    def close_epoch(self, n_steps: int) -> None:
        """Average the last ``n_steps`` step values of each metric into one epoch value."""
        for key, values in self.steps.items():
            if n_steps:
                self.epochs[key].append(sum(values[-n_steps:]) / n_steps)

    def last(self, key: str = "loss") -> float:
        return self.epochs[key][-1]


def _as_metrics(result: StepResult) -> dict[str, torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return {"loss": result}
    if "loss" not in result:
        raise KeyError(f"a training step must return a tensor or a mapping with 'loss', got {sorted(result)}")
    return dict(result)


def fit(
    model: nn.Module,
    step: Callable[[nn.Module, Batch], StepResult],
    batches: Callable[[], Iterable[Batch]],
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    history: History | None = None,
    desc: str = "train",
    on_epoch_end: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``batches()``.

    ``step(model, batch)`` returns the loss (or a mapping with ``loss`` and other metrics);
    the harness clears gradients, back-propagates and steps the optimizer.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    history = history or History()
    model.train()
    bar = progress(range(epochs), desc=desc, unit="epoch", leave=True)
    for epoch in bar:
        n = 0
        for batch in progress(batches(), desc=f"epoch {epoch + 1}", unit="batch"):
            metrics = _as_metrics(step(model, batch))
            optimizer.zero_grad(set_to_none=True)
            metrics["loss"].backward()
            optimizer.step()
            history.log_step({k: v.detach().item() for k, v in metrics.items()})
            n += 1
        history.close_epoch(n)
        if hasattr(bar, "set_postfix") and n:
            bar.set_postfix(loss=f"{history.last():.4g}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    model.eval()
    return history


def ae_train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> float:
    """One optimisation step of an auto-encoder under the Bernoulli (binary cross-entropy) loss.

    Clears the old gradients, reconstructs ``x`` with ``model`` (pixel probabilities), takes the
    BCE of ``x`` under them summed over pixels and averaged over the batch, back-propagates and
    steps ``optimizer``. Returns that loss, measured before the update, as a float.
    """
    # BEGIN REFERENCE
    optimizer.zero_grad(set_to_none=True)
    loss = bernoulli_nll(model(x), x).mean()
    loss.backward()
    optimizer.step()
    return loss.detach().item()
    # END REFERENCE


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash or a full disk leaves the old file (or none), never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class StaleCheckpoint(ValueError):
    """A checkpoint whose model code differs from the code loading it: its weights mean something else."""


def cache_dir(chapter: str) -> Path:
    """A chapter's checkpoint folder by default: ``$GENLAB_CACHE/<chapter>`` or ``~/.cache/genlab/<chapter>``."""
    return Path(os.environ.get("GENLAB_CACHE", "~/.cache/genlab")).expanduser() / chapter


def model_code_digest(model: nn.Module) -> str:
    """A short hash of the source of every module that defines one of ``model``'s layer classes.

    torch's own layers are left out (its version is recorded beside the weights); a class defined
    where no source can be found (an interactive session) counts by its qualified name.
    """
    sources = set()
    for layer in model.modules():
        cls = type(layer)
        if cls.__module__.split(".")[0] == "torch":
            continue
        module = sys.modules.get(cls.__module__)
        try:
            sources.add(inspect.getsource(module if module is not None and module.__name__ != "__main__" else cls))
        except (OSError, TypeError):
            sources.add(f"{cls.__module__}.{cls.__qualname__}")
    digest = hashlib.sha256()
    for text in sorted(sources):
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:16]


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    config: Mapping[str, Any],
    seed: int,
    epoch: int,
    history: History | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """Save weights with the metadata needed to trust them later.

    Beside the config, seed and epoch: the commit of the code that trained them and the digest of
    the model's code (:func:`model_code_digest`), which :func:`load_checkpoint` checks.
    """
    from genlab import __version__
    from genlab.experiments.provenance import git_commit

    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "meta": {
            "config": dict(config),
            "seed": seed,
            "epoch": epoch,
            "genlab_version": __version__,
            "torch_version": str(torch.__version__),
            "commit": git_commit(),
            "model_code": model_code_digest(model),
        },
        "history": {"steps": dict(history.steps), "epochs": dict(history.epochs)} if history else None,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint, restore ``model`` when given, and return the payload.

    With ``config``, refuse a checkpoint trained with a different configuration (``ValueError``);
    with ``model``, one made by other model code, or by code too old to say (:class:`StaleCheckpoint`).
    Either way, train again.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for a damaged file
        reason = str(exc).strip().splitlines()[0]
        raise RuntimeError(f"{path}: not a readable genlab checkpoint ({reason}); delete it and train again") from exc
    if not isinstance(payload, dict) or "meta" not in payload:
        raise RuntimeError(f"{path}: not a genlab checkpoint (no metadata); delete it and train again")
    if config is not None and dict(config) != payload["meta"]["config"]:
        raise ValueError(
            f"{path}: trained with config {payload['meta']['config']}, asked for {dict(config)}; "
            "delete it or load it without a config"
        )
    if model is not None:
        made_by = payload["meta"].get("model_code")
        if made_by != model_code_digest(model):
            commit = payload["meta"].get("commit", "an unrecorded commit")
            raise StaleCheckpoint(
                f"{path}: {'made by other model code' if made_by else 'records no model code'} "
                f"(trained at {commit}); delete it and train again"
            )
        model.load_state_dict(payload["model"])
    if payload.get("history"):
        history = History()
        history.steps.update(payload["history"]["steps"])
        history.epochs.update(payload["history"]["epochs"])
        payload["history"] = history
    return payload
