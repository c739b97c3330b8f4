"""Diagrams of the chapters' ideas, drawn with matplotlib so that they live beside the code they explain.

One function per diagram, each returning a figure 7.5 inches wide with text of at least 10 points,
legible at the book's page width:

- :func:`latent_variable_model` (VAE theory): the generative story and the encoder that inverts it;
- :func:`vae_forward_pass` (from auto-encoders to CVAEs): encoder, reparameterised sample, decoder, loss;
- :func:`conv_vae_shapes` (convolutional VAEs): the feature maps' sizes through encoder and decoder;
- :func:`gan_training_loop` (DCGAN): the discriminator's step and the generator's step;
- :func:`eps_ball` (adversarial attacks): the L-inf and L2 balls, an FGSM step and a projected PGD step;
- :func:`lipschitz_picture` (the harmonic perspective): how encoder noise smooths the decoder, and the
  bracket of the Lipschitz estimators.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

FONT = 11
SMALL = 10


def _canvas(width: float, height: float, xlim: tuple[float, float], ylim: tuple[float, float]) -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, color: str = "#dce9f5", size: int = FONT) -> None:
    """A rounded box centred at (x, y) with its label."""
    ax.add_patch(
        FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=color, ec="0.3")
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    text: str = "",
    *,
    dashed: bool = False,
    color: str = "0.2",
    rad: float = 0.0,
    offset: tuple[float, float] = (0, 0.18),
) -> None:
    """An arrow from ``start`` to ``end`` with an optional label above its middle."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=14,
            lw=1.4,
            color=color,
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if text:
        mid = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
        ax.text(*mid, text, ha="center", va="bottom", fontsize=SMALL, color=color)


def latent_variable_model() -> Figure:
    """The latent-variable model: z from the prior, x from the decoder, and the encoder that guesses z from x."""
    fig, ax = _canvas(7.5, 3.1, (0, 10), (-0.5, 3.9))
    ax.add_patch(Rectangle((2.2, 0.55), 5.6, 3.0, fill=False, ec="0.4", lw=1))
    ax.text(2.35, 3.4, "for each image of the data set", ha="left", va="top", fontsize=SMALL, color="0.3")
    ax.add_patch(Circle((3.4, 2.0), 0.55, fc="white", ec="0.2", lw=1.5))
    ax.text(3.4, 2.0, "$z$", ha="center", va="center", fontsize=16)
    ax.add_patch(Circle((6.6, 2.0), 0.55, fc="#bfbfbf", ec="0.2", lw=1.5))
    ax.text(6.6, 2.0, "$x$", ha="center", va="center", fontsize=16)
    _arrow(ax, (3.95, 2.15), (6.05, 2.15), r"decoder $p_\theta(x \mid z)$", offset=(0, 0.25))
    _arrow(
        ax, (6.05, 1.75), (3.95, 1.75), r"encoder $q_\phi(z \mid x)$", dashed=True, color="tab:blue", offset=(0, -0.55)
    )
    ax.text(1.0, 3.1, "prior", ha="center", fontsize=FONT)
    ax.text(1.0, 2.55, r"$z \sim \mathcal{N}(0, I_D)$", ha="center", fontsize=FONT)
    _arrow(ax, (1.6, 2.3), (2.85, 2.05))
    ax.text(
        8.95,
        2.0,
        "observed:\n$M$ pixels,\neach drawn\ngiven $z$",
        ha="center",
        va="center",
        fontsize=SMALL,
    )
    ax.text(
        5.0,
        -0.25,
        r"$p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz$ is intractable; the encoder approximates $p(z \mid x)$",
        ha="center",
        fontsize=SMALL,
    )
    ax.set_title("A latent-variable model (white: hidden, grey: observed)", fontsize=FONT)
    fig.tight_layout()
    return fig


def vae_forward_pass() -> Figure:
    """One training step of a VAE: encode, sample by reparameterisation, decode, and the two loss terms."""
    fig, ax = _canvas(7.5, 3.4, (0, 12.5), (-0.3, 5.4))
    _box(ax, 0.8, 3.2, 1.2, 0.8, "$x$", "#e6e6e6")
    _box(ax, 2.9, 3.2, 1.9, 1.0, "encoder")
    _box(ax, 5.3, 4.1, 1.3, 0.7, r"$\mu$")
    _box(ax, 5.3, 2.3, 1.3, 0.7, r"$\log\sigma$")
    _box(ax, 7.6, 3.2, 2.0, 1.0, r"$z = \mu + \sigma \odot \varepsilon$", "#fde9c9")
    _box(ax, 7.6, 0.9, 1.9, 0.7, r"$\varepsilon \sim \mathcal{N}(0, I)$", "#f2f2f2", SMALL)
    _box(ax, 10.0, 3.2, 1.7, 1.0, "decoder")
    _box(ax, 11.9, 3.2, 0.9, 0.8, r"$\hat{x}$", "#e6e6e6")
    _arrow(ax, (1.4, 3.2), (1.95, 3.2))
    _arrow(ax, (3.85, 3.45), (4.65, 4.05))
    _arrow(ax, (3.85, 2.95), (4.65, 2.35))
    _arrow(ax, (5.95, 4.0), (6.6, 3.45))
    _arrow(ax, (5.95, 2.4), (6.6, 2.95))
    _arrow(ax, (7.6, 1.25), (7.6, 2.7), dashed=True, color="0.45")
    _arrow(ax, (8.6, 3.2), (9.15, 3.2))
    _arrow(ax, (10.85, 3.2), (11.45, 3.2))
    ax.text(
        5.3,
        5.05,
        r"KL$(q_\phi(z \mid x)\,\|\,\mathcal{N}(0, I))$: from $\mu$ and $\sigma$",
        ha="center",
        fontsize=SMALL,
    )
    ax.text(11.6, 3.85, r"BCE$(\hat{x}, x)$", ha="center", fontsize=SMALL)
    ax.text(
        3.6,
        0.9,
        "the noise comes from outside:\ngradients reach $\\mu$ and $\\sigma$ through $z$",
        ha="center",
        va="center",
        fontsize=SMALL,
        color="0.3",
    )
    ax.set_title("A VAE's forward pass: loss = BCE + beta * KL, averaged over the batch", fontsize=FONT)
    fig.tight_layout()
    return fig


def conv_vae_shapes() -> Figure:
    """The sizes of the feature maps of the chapter's convolutional encoder and decoder (h = 32)."""
    fig, ax = _canvas(7.5, 4.2, (0, 15), (-0.6, 8.0))

    def stack(x: float, y: float, side: int, depth: int, label: str, color: str) -> float:
        size = 0.085 * side + 0.45
        for k in range(depth):
            ax.add_patch(Rectangle((x + 0.13 * k, y - size / 2 + 0.13 * k), size, size, fc=color, ec="0.3", lw=0.8))
        ax.text(x + size / 2, y - size / 2 - 0.2, label, ha="center", va="top", fontsize=SMALL)
        return x + size + 0.13 * depth

    ax.text(0.2, 7.6, "encoder: each stride-2 convolution halves the side", fontsize=SMALL)
    x = 0.3
    for side, depth, label in (
        (28, 1, "1 x 28 x 28"),
        (14, 2, "h x 14 x 14"),
        (7, 3, "2h x 7 x 7"),
        (4, 4, "2h x 4 x 4"),
    ):
        end = stack(x, 5.4, side, depth, label, "#dce9f5" if depth > 1 else "#e6e6e6")
        _arrow(ax, (end + 0.1, 5.4), (end + 0.75, 5.4))
        x = end + 0.85
    _box(ax, x + 1.0, 5.4, 2.4, 1.1, r"$\mu$, $\log\sigma$" + "\n(2 nz numbers)", "#fde9c9", SMALL)
    _arrow(ax, (x + 1.0, 4.85), (x + 1.0, 3.2), r"$z = \mu + \sigma\varepsilon$", offset=(1.05, -0.3))
    ax.text(0.2, 3.0, "decoder: each transposed convolution doubles it; 16 logits per pixel", fontsize=SMALL)
    _box(ax, x + 1.0, 1.4, 1.2, 0.9, "$z$ (nz)", "#fde9c9", SMALL)
    x = x - 0.4
    for side, depth, label in (
        (4, 4, "2h x 4 x 4"),
        (7, 3, "2h x 7 x 7"),
        (14, 2, "h x 14 x 14"),
        (28, 1, "16 x 28 x 28"),
    ):
        size = 0.085 * side + 0.45 + 0.13 * depth
        _arrow(ax, (x + 0.55, 1.4), (x - 0.1, 1.4))
        x -= size + 0.85
        stack(x + 0.7, 1.4, side, depth, label, "#e3f1de")
    ax.set_title("The convolutional VAE's feature maps (channels x height x width)", fontsize=FONT)
    fig.tight_layout()
    return fig


def gan_training_loop() -> Figure:
    """The two alternating steps of GAN training, with what each step updates."""
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4))
    for ax, title in zip(axes, ("1. discriminator step", "2. generator step")):
        ax.set_xlim(0, 6.4)
        ax.set_ylim(0, 5)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title, fontsize=FONT)
    d, g = axes
    _box(d, 0.85, 4.0, 1.5, 0.7, "real $x$", "#e6e6e6", SMALL)
    _box(d, 3.6, 4.0, 0.8, 0.7, "$D$", "#dce9f5")
    _arrow(d, (1.6, 4.0), (3.2, 4.0), "one batch")
    d.text(4.15, 4.0, "BCE(., 1)", va="center", fontsize=SMALL)
    _box(d, 0.85, 2.0, 1.5, 0.7, r"$z \sim \mathcal{N}(0, I)$", "#f2f2f2", SMALL)
    _box(d, 2.2, 2.0, 0.6, 0.7, "$G$", "#e3f1de")
    _box(d, 3.6, 2.0, 0.8, 0.7, "$D$", "#dce9f5")
    _arrow(d, (1.6, 2.0), (1.9, 2.0))
    _arrow(d, (2.5, 2.0), (3.2, 2.0), "detach", offset=(0, 0.3))
    d.text(4.15, 2.0, "BCE(., 0)", va="center", fontsize=SMALL)
    d.text(3.2, 0.6, "sum of the two: update D only", ha="center", fontsize=SMALL, color="tab:blue")
    _box(g, 0.85, 3.0, 1.5, 0.7, r"$z \sim \mathcal{N}(0, I)$", "#f2f2f2", SMALL)
    _box(g, 2.4, 3.0, 0.8, 0.7, "$G$", "#e3f1de")
    _box(g, 4.0, 3.0, 0.8, 0.7, "$D$", "#dce9f5")
    _arrow(g, (1.6, 3.0), (2.0, 3.0))
    _arrow(g, (2.8, 3.0), (3.6, 3.0), "fakes", offset=(0, 0.3))
    g.text(4.55, 3.0, "BCE(., 1)", va="center", fontsize=SMALL)
    g.text(3.2, 1.7, "the fakes labelled real", ha="center", fontsize=SMALL)
    g.text(3.2, 0.6, "update G only", ha="center", fontsize=SMALL, color="tab:green")
    fig.suptitle("GAN training: the two steps alternate, each on fresh codes", fontsize=FONT)
    fig.tight_layout()
    return fig


def eps_ball() -> Figure:
    """The L-inf and L2 balls around an image, FGSM's step to a corner, and a PGD step projected back."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    eps = 1.0
    ax.add_patch(Rectangle((-eps, -eps), 2 * eps, 2 * eps, fc="#dce9f5", ec="tab:blue", lw=1.5, alpha=0.8))
    ax.add_patch(Circle((0, 0), eps, fc="none", ec="tab:orange", lw=1.5, ls="--"))
    ax.plot(0, 0, "ko")
    ax.text(0.07, -0.22, "$x$", fontsize=13)
    gradient = np.array([0.9, 0.35])
    ax.annotate(
        "", xy=tuple(gradient * 0.75), xytext=(0, 0), arrowprops={"arrowstyle": "-|>", "color": "0.4", "lw": 1.2}
    )
    ax.text(0.72, 0.08, r"$\nabla_x J$", fontsize=SMALL, color="0.3")
    ax.annotate("", xy=(eps, eps), xytext=(0, 0), arrowprops={"arrowstyle": "-|>", "color": "tab:red", "lw": 1.6})
    ax.text(1.05, 1.05, r"FGSM: $x + \varepsilon\,\mathrm{sign}(\nabla_x J)$", fontsize=SMALL, color="tab:red")
    start = np.array([-0.35, 0.45])
    step = np.array([0.55, 0.8])
    ax.plot(*start, "o", color="tab:purple")
    ax.annotate(
        "",
        xy=tuple(start + step),
        xytext=tuple(start),
        arrowprops={"arrowstyle": "-|>", "color": "tab:purple", "lw": 1.4},
    )
    projected = np.clip(start + step, -eps, eps)
    ax.annotate(
        "",
        xy=tuple(projected),
        xytext=tuple(start + step),
        arrowprops={"arrowstyle": "-|>", "color": "tab:purple", "lw": 1.4, "linestyle": ":"},
    )
    ax.plot(*projected, "o", color="tab:purple")
    ax.text(
        -2.9,
        1.1,
        "PGD: a step of size alpha,\nthen back into the box\n(clip to x +- eps)",
        fontsize=SMALL,
        color="tab:purple",
    )
    ax.text(
        -2.9,
        -0.35,
        r"$\|\delta\|_\infty \leq \varepsilon$: every pixel" + "\nmoves at most eps",
        fontsize=SMALL,
        color="tab:blue",
    )
    ax.text(
        -2.9,
        -1.25,
        r"$\|\delta\|_2 \leq \varepsilon$ (dashed):" + "\na much smaller set",
        fontsize=SMALL,
        color="tab:orange",
    )
    ax.set_xlim(-3.0, 3.6)
    ax.set_ylim(-1.45, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("The attacker's budget around one image (two of its 3072 pixels)", fontsize=FONT)
    fig.tight_layout()
    return fig


def lipschitz_picture() -> Figure:
    """Left: a decoder seen through encoder noise of two sizes. Right: the estimators' bracket of L."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.4), gridspec_kw={"width_ratios": [1.3, 1]})
    z = np.linspace(-3, 3, 600)
    decoder = np.tanh(3 * z) + 0.3 * np.sin(5 * z)  # any steep function serves
    left.plot(z, decoder, color="0.2", lw=1.5, label="a steep decoder $g(z)$")
    for sigma, color in ((0.1, "tab:red"), (0.8, "tab:blue")):
        kernel = np.exp(-0.5 * (z / sigma) ** 2)
        smooth = np.convolve(decoder, kernel / kernel.sum(), mode="same")
        left.plot(z[60:-60], smooth[60:-60], color=color, lw=1.5, label=rf"averaged over $\sigma_{{enc}}$ = {sigma:g}")
    left.set_xlabel("code $z$")
    left.set_ylabel("output")
    left.set_ylim(-1.5, 2.4)
    left.set_title("Encoder noise smooths the decoder", fontsize=FONT)
    left.legend(fontsize=SMALL, loc="upper left")
    names = ["lower bound\n(Jacobian)", "true L", "LipSDP", "product\nbound"]
    values = [1.0, 1.6, 2.4, 9.0]
    right.set_xscale("log")
    right.set_xlim(0.6, 15)
    right.set_ylim(-1, 1.6)
    right.axhline(0, color="0.5", lw=1)
    for name, value, color in zip(names, values, ("tab:green", "k", "tab:blue", "tab:red")):
        right.plot(value, 0, "o", color=color, ms=8)
        right.text(value, 0.25 if name != "true L" else -0.75, name, ha="center", fontsize=SMALL, color=color)
    right.set_yticks([])
    right.set_xlabel("Lipschitz constant (log scale)")
    right.set_title("Every estimate brackets L", fontsize=FONT)
    for side in ("left", "right", "top"):
        right.spines[side].set_visible(False)
    fig.tight_layout()
    return fig
