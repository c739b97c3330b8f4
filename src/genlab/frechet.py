"""A Frechet distance between real and generated images, on features of a classifier the course trains.

    net = train_feature_net(train_data, epochs=10)            # a small CNN, trained here, no downloads
    real = feature_stats(net, test_data.batches(500, shuffle=False))
    fake = feature_stats(net, [generator_samples])
    frechet_distance(*real, *fake)

The Frechet distance between two Gaussians ``N(mu1, C1)`` and ``N(mu2, C2)`` is

    ||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^(1/2) C2 C1^(1/2))^(1/2)).

FID (Heusel et al., 2017) fits those Gaussians to 2048 Inception-v3 features of 50 000 images.
Here the features are the 128 penultimate activations of :class:`FeatureNet`, trained on the
chapter's own training images, and fewer images are used. The numbers rank models trained on
the same data and compared with the same network, and they are **not** comparable with
published FID values (other features, other scale, another bias from the sample size).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.dcgan import Generator
from genlab.progress import progress

FEATURES = 128


class FeatureNet(nn.Module):
    """A small CNN classifier of 3 x 32 x 32 images; ``features(x)`` are its 128 penultimate activations."""

    def __init__(self, channels: int = 3, classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16 x 16
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8 x 8
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4 x 4
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, FEATURES),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_feature_net(data: Any, *, epochs: int, batch_size: int = 128, lr: float = 1e-3) -> FeatureNet:
    """Train a :class:`FeatureNet` on labelled images (a :class:`genlab.data.TensorData`) with Adam."""
    from genlab.train import fit

    if data.y is None or data.y.dim() != 1:
        raise ValueError("train_feature_net needs one integer class label per image (data.y of shape (N,))")
    net = FeatureNet(channels=data.x.shape[1], classes=int(data.y.max()) + 1).to(data.device)

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    fit(
        net,
        step,
        lambda: data.batches(batch_size),
        epochs=epochs,
        optimizer=torch.optim.Adam(net.parameters(), lr=lr),
        desc="feature classifier",
    )
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, data: Any, batch_size: int = 500) -> float:
    """Share of ``data``'s images that ``net`` classifies correctly."""
    net.eval()
    right = sum(int((net(x).argmax(1) == y).sum()) for x, y in data.batches(batch_size, shuffle=False))
    return right / len(data)


@torch.no_grad()
def feature_stats(net: FeatureNet, batches: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of ``net.features`` over images, in float64 on the CPU.

    ``batches`` yields image tensors (N, C, 32, 32) in [0, 1] or ``(images, labels)`` pairs.
    """
    net.eval()
    feats = []
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        feats.append(net.features(x).to("cpu", torch.float64))
    if not feats:
        raise ValueError("feature_stats needs at least one batch of images")
    f = torch.cat(feats)
    if f.shape[0] < 2:
        raise ValueError(f"feature_stats needs at least 2 images for a covariance, got {f.shape[0]}")
    return f.mean(0), torch.cov(f.T)


def _sqrt_psd(c: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(c)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2) (float64, symmetric square roots).

    ``tr((C1 C2)^(1/2))`` is computed as ``tr((S C2 S)^(1/2))`` with ``S = C1^(1/2)``: the same
    eigenvalues, and a symmetric matrix, so no complex parts appear.
    """
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    cov1, cov2 = cov1.to(torch.float64), cov2.to(torch.float64)
    d = mu1.shape[-1]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            f"expected means (D,) and covariances (D, D), got {tuple(mu1.shape)}, {tuple(cov1.shape)}, "
            f"{tuple(mu2.shape)}, {tuple(cov2.shape)}"
        )
    s = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(s @ cov2 @ s).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return float(value.clamp(min=0))


@torch.no_grad()
def generated_stats(
    net: FeatureNet, generator: Generator, n: int, *, seed: int = 0, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature statistics of ``n`` images of ``generator`` (evaluation mode) from codes seeded with ``seed``."""
    dev = next(generator.parameters()).device
    g = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.eval()
    try:
        batches = (
            generator(torch.randn(min(batch_size, n - i), generator.code_size, generator=g).to(dev))
            for i in range(0, n, batch_size)
        )
        return feature_stats(net, batches)
    finally:
        generator.train(was_training)


def frechet_curve(
    net: FeatureNet,
    real_stats: tuple[torch.Tensor, torch.Tensor],
    generator: Generator,
    snapshots: Sequence[tuple[int, dict[str, torch.Tensor]]],
    *,
    n: int,
    seed: int = 0,
) -> list[tuple[int, float]]:
    """The Frechet distance of each generator snapshot ``(step, state_dict)``: ``[(step, distance)]``.

    ``generator`` is a network of the snapshots' architecture; its weights are overwritten. Every
    snapshot is measured on the same codes.
    """
    curve = []
    for step, state in progress(snapshots, desc="Frechet distances", unit="snapshot"):
        generator.load_state_dict(state)
        curve.append((step, frechet_distance(*real_stats, *generated_stats(net, generator, n, seed=seed))))
    return curve
