"""Training a DCGAN: initialisation, the classification loss, one step of each player, the
training loop, activation maximisation and reconstruction by latent optimisation.

    from genlab import gan
    from genlab.models.dcgan import Generator, Discriminator

    G, D = Generator(), Discriminator()
    G.apply(gan.dcgan_init); D.apply(gan.dcgan_init)
    history = gan.train_gan(G, D, data, d_step=gan.discriminator_step, g_step=gan.generator_step,
                            settings=gan.settings(genlab.profile()))

The discriminator outputs logits; label 1 means "real", 0 means "fake". The discriminator
minimises ``BCE(D(x), 1) + BCE(D(G(z)), 0)`` on two separate batches; the generator minimises
the non-saturating ``BCE(D(G(z)), 1)``.

:func:`train_gan` and :func:`activation_maximisation` take the step and loss functions as
arguments, so the chapter's notebook runs them with the student's own. ``python -m genlab.experiments.dcgan``
runs the chapter's experiment from a terminal and writes its tables and figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.dcgan import Generator
from genlab.progress import progress
from genlab.runtime import Profile

DStep = Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer], Any]
GStep = Callable[[nn.Module, nn.Module, torch.Tensor, torch.optim.Optimizer], Any]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

REAL, FAKE = 1.0, 0.0


# ----------------------------------------------------------------------------- graded pieces


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation of one layer, for ``net.apply(dcgan_init)``.

    ``Conv2d`` and ``ConvTranspose2d`` weights ~ N(0, 0.02); ``BatchNorm2d`` weights ~ N(1, 0.02)
    and biases 0. Every other layer (``Linear`` included) and the convolutions' biases keep
    PyTorch's default initialisation.
    """
    # BEGIN REFERENCE
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, mean=1.0, std=0.02)
        nn.init.zeros_(module.bias)
    # END REFERENCE


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``labels`` (1 real, 0 fake, or soft labels in [0, 1]) under the
    probabilities ``sigmoid(logits)``, averaged over all entries; computed from the logits, so it
    stays exact for confident discriminators (logits of +-100)."""
    # BEGIN REFERENCE
    return F.binary_cross_entropy_with_logits(logits, labels)
    # END REFERENCE


def discriminator_step(
    discriminator: nn.Module,
    generator: nn.Module,
    real: torch.Tensor,
    z: torch.Tensor,
    optimizer: torch.optim.Optimizer,
) -> torch.Tensor:
    """One update of the discriminator; returns its loss ``BCE(D(real), 1) + BCE(D(G(z)), 0)``.

    Real and fake images go through the discriminator as two separate batches; the fake images
    are detached, so the generator receives no gradient; old gradients are cleared first.
    """
    # BEGIN REFERENCE
    optimizer.zero_grad()
    real_logits = discriminator(real)
    fake_logits = discriminator(generator(z).detach())
    loss = classification_loss(real_logits, torch.full_like(real_logits, REAL)) + classification_loss(
        fake_logits, torch.full_like(fake_logits, FAKE)
    )
    loss.backward()
    optimizer.step()
    return loss.detach()
    # END REFERENCE


def generator_step(
    discriminator: nn.Module, generator: nn.Module, z: torch.Tensor, optimizer: torch.optim.Optimizer
) -> torch.Tensor:
    """One update of the generator with the non-saturating loss ``BCE(D(G(z)), 1)``; returns it.

    Only ``optimizer`` (the generator's) steps; the discriminator is left as it is.
    """
    # BEGIN REFERENCE
    optimizer.zero_grad()
    logits = discriminator(generator(z))
    loss = classification_loss(logits, torch.full_like(logits, REAL))
    loss.backward()
    optimizer.step()
    return loss.detach()
    # END REFERENCE


def reconstruct(generator: Generator, x: torch.Tensor, steps: int = 500, lr: float = 1e-2) -> torch.Tensor:
    """The codes whose images are closest to ``x`` in squared L2, found by latent optimisation.

    The generator goes to evaluation mode (and stays there); its weights are not changed. The
    codes start at zero, and ``steps`` Adam steps (learning rate ``lr``, default betas) minimise
    ``sum_i ||G(z_i) - x_i||^2``. Returns the codes, detached, shape (N, generator.code_size).
    """
    # BEGIN REFERENCE
    generator.eval()
    z = torch.zeros(x.shape[0], generator.code_size, device=x.device, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        distance = (generator(z) - x).pow(2).sum()
        distance.backward()
        optimizer.step()
    return z.detach()
    # END REFERENCE


# ----------------------------------------------------------------------------- given tools


def smooth(values: Sequence[float], factor: float = 0.95) -> list[float]:
    """Exponential moving average with the start-up bias removed (the first value is kept as it is)."""
    if not 0.0 <= factor < 1.0:
        raise ValueError(f"factor must be in [0, 1), got {factor}")
    out, s, w = [], 0.0, 0.0
    for v in values:
        s = factor * s + (1 - factor) * float(v)
        w = factor * w + (1 - factor)
        out.append(s / w)
    return out


@torch.no_grad()
def sample(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Images of the codes ``z`` in evaluation mode; the generator's mode is restored afterwards."""
    was_training = generator.training
    generator.eval()
    try:
        return generator(z)
    finally:
        generator.train(was_training)


def activation_maximisation(
    generator: nn.Module, discriminator: nn.Module, z: torch.Tensor, loss: Loss, steps: int = 500, lr: float = 1e-2
) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes near ``z`` whose images the discriminator finds most real: ``steps`` Adam steps on
    ``loss(D(G(z)), 1)`` with respect to the codes only, both networks in evaluation mode.

    Returns ``(codes, images)``, detached. The networks' weights do not change.
    """
    generator.eval()
    discriminator.eval()
    code = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([code], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = discriminator(generator(code))
        value = loss(logits, torch.full_like(logits, REAL))
        (grad,) = torch.autograd.grad(value, [code])  # the weights' .grad stay untouched
        code.grad = grad
        optimizer.step()
    return code.detach(), sample(generator, code.detach())


@dataclass(frozen=True)
class GanSettings:
    """How much one profile trains (the chapter's notebook and ``python -m genlab.experiments.dcgan`` share these)."""

    n_train: int | None  # training images (None: all)
    n_test: int  # test images for the Frechet distance and the reconstructions
    epochs: int
    batch_size: int
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    code_size: int = 64
    grids: int = 5  # sample grids from the fixed noise over a run (the last one at its end)
    snapshots: int = 10  # generator snapshots over a run, for the Frechet-distance curves
    n_fake: int = 1000  # generated images per Frechet distance
    feature_epochs: int = 10  # epochs of the feature classifier
    actmax_codes: int = 64
    vis_steps: int = 500  # Adam steps of activation maximisation and of reconstruction
    vis_lr: float = 1e-2
    n_recon: int = 64  # test images reconstructed
    seed: int = 42


SETTINGS = {
    # The seed's settings: all of CIFAR-10, 25 epochs of batches of 128 (9750 steps).
    "full": GanSettings(n_train=None, n_test=10_000, epochs=25, batch_size=128, n_fake=10_000),
    # A few hundred steps (384) on a small subset, on a CPU. Five times the seed's learning rate, so that
    # so few steps already show shapes.
    "smoke": GanSettings(
        n_train=3072,
        n_test=1000,
        epochs=4,
        batch_size=32,
        lr=1e-3,
        grids=4,
        snapshots=8,
        n_fake=1000,
        feature_epochs=2,
        actmax_codes=16,
        vis_steps=150,
        n_recon=16,
    ),
    # The full settings' networks, batches and loaders, two epochs of whatever data there is (CI's small
    # CIFAR-10 folder), every budget cut to a few steps.
    "full-dry": GanSettings(
        n_train=None,
        n_test=10_000,
        epochs=2,
        batch_size=128,
        grids=2,
        snapshots=2,
        n_fake=128,
        feature_epochs=1,
        actmax_codes=4,
        vis_steps=3,
        n_recon=4,
    ),
    # The reference run (genlab.experiments.reference): 1 125 steps per model on 12 000 Fashion-MNIST images
    # padded to 3x32x32, about twenty minutes on a 2-core CPU; long enough for the spectrally normalised
    # run to settle and for activation maximisation to move the images.
    "reference": GanSettings(
        n_train=12_000,
        n_test=2000,
        epochs=6,
        batch_size=64,
        lr=5e-4,
        grids=5,
        snapshots=10,
        n_fake=2000,
        feature_epochs=4,
        actmax_codes=25,
        vis_steps=500,
        n_recon=25,
    ),
    # While nbgrader grades: the least the later cells need.
    "grading": GanSettings(
        n_train=64,
        n_test=64,
        epochs=1,
        batch_size=16,
        grids=1,
        snapshots=2,
        n_fake=64,
        feature_epochs=1,
        actmax_codes=4,
        vis_steps=2,
        n_recon=4,
    ),
}


def settings(profile: Profile | str) -> GanSettings:
    """The settings of a profile (``genlab.profile()``, or ``"smoke"``, ``"reference"``, ``"full"``, ``"full-dry"``,
    ``"grading"``)."""
    if isinstance(profile, Profile):
        profile = "grading" if profile.grading else profile.name
    if profile not in SETTINGS:
        raise ValueError(f"profile must be one of {', '.join(SETTINGS)}, got {profile!r}")
    return SETTINGS[profile]


@dataclass
class GanHistory:
    """What a GAN run recorded: the losses of every step, sample grids and generator snapshots."""

    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    grids: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (step, images), on the CPU
    snapshots: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)  # (step, state_dict)
    steps_per_epoch: int = 0
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.d_loss)

    def smoothed(self, factor: float = 0.95) -> dict[str, list[float]]:
        """Both loss curves, smoothed as the seed plots them."""
        return {"discriminator": smooth(self.d_loss, factor), "generator": smooth(self.g_loss, factor)}


def fixed_codes(n: int, code_size: int = 64, seed: int = 0) -> torch.Tensor:
    """``n`` standard normal codes that are the same on every machine (drawn on the CPU)."""
    return torch.randn(n, code_size, generator=torch.Generator().manual_seed(seed))


def _marks(total: int, count: int) -> set[int]:
    """``count`` step numbers spread evenly over 1..total, the last one always included."""
    if total <= 0 or count <= 0:
        return set()
    return {max(1, round(total * (k + 1) / count)) for k in range(count)}


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def train_gan(
    generator: Generator,
    discriminator: nn.Module,
    data: Any,
    *,
    d_step: DStep,
    g_step: GStep,
    settings: GanSettings,
    fixed_noise: torch.Tensor | None = None,
    seed: int | None = None,
    desc: str = "GAN",
) -> GanHistory:
    """Train both networks with Adam, alternating one ``d_step`` and one ``g_step`` per batch.

    ``data`` is a :class:`genlab.data.TensorData` (or anything with ``.batches(n, shuffle=True,
    drop_last=True, generator=g)``). Each step draws fresh codes for each player from a generator
    seeded with ``seed`` (default ``settings.seed``), so two runs with the same seed see the same
    batches and codes. ``settings.grids`` grids of ``generator(fixed_noise)`` and
    ``settings.snapshots`` copies of the generator's weights are kept over the run.
    """
    if settings.epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {settings.epochs}")
    dev = next(generator.parameters()).device
    seed = settings.seed if seed is None else seed
    rng = torch.Generator(device=dev).manual_seed(seed)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=settings.lr, betas=settings.betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr, betas=settings.betas)
    steps_per_epoch = len(data.batches(settings.batch_size, shuffle=False, drop_last=True))
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data)} training images make no batch of {settings.batch_size}")
    total = steps_per_epoch * settings.epochs
    grid_at, snapshot_at = _marks(total, settings.grids), _marks(total, settings.snapshots)
    history = GanHistory(steps_per_epoch=steps_per_epoch)
    code_size = generator.code_size
    generator.train()
    discriminator.train()
    start = time.perf_counter()
    bar = progress(range(total), desc=desc, unit="step", leave=True)
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None]] = iter(())
    for step in bar:
        if step % steps_per_epoch == 0:
            batches = data.batches(settings.batch_size, shuffle=True, drop_last=True, generator=rng)
        real, _ = next(batches)
        n = real.shape[0]
        z_d = torch.randn(n, code_size, device=dev, generator=rng)
        history.d_loss.append(float(d_step(discriminator, generator, real, z_d, opt_d)))
        z_g = torch.randn(n, code_size, device=dev, generator=rng)
        history.g_loss.append(float(g_step(discriminator, generator, z_g, opt_g)))
        done = step + 1
        if done in grid_at and fixed_noise is not None:
            history.grids.append((done, sample(generator, fixed_noise).cpu()))
        if done in snapshot_at:
            history.snapshots.append((done, _state(generator)))
        if hasattr(bar, "set_postfix") and done % 20 == 0:
            bar.set_postfix(d=f"{history.d_loss[-1]:.3f}", g=f"{history.g_loss[-1]:.3f}")
    history.seconds = time.perf_counter() - start
    generator.eval()
    discriminator.eval()
    return history


def reconstruction_error(generator: nn.Module, codes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per pixel of each image's reconstruction ``G(code)``: one value per image."""
    return (sample(generator, codes) - x).pow(2).flatten(1).mean(1)
