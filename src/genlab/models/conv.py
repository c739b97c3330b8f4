"""Convolutional VAEs of the chapter "Convolutional VAEs and their latent space" (conv_vae).

Three families, all for one-channel 28 x 28 images:

* :class:`ConvEncoder` / :class:`ConvDecoder` and the :class:`CategoricalConvVAE` built from them:
  a strided CNN encoder and a transposed-CNN decoder that outputs ``levels`` logits per pixel
  (a categorical distribution over the grey levels of a 4-bit image). The decoder starts from a
  4 x 4 map; its three transposed convolutions give 7, 14 and 28 pixels, and the first one needs
  ``output_padding=0`` (4 -> 7), the other two ``output_padding=1`` (7 -> 14 -> 28).
* :class:`BNConvEncoder` / :class:`BNConvDecoder` with :func:`bn_block` (BatchNorm -> LeakyReLU ->
  Dropout after every hidden convolution) and a 2-D code: :class:`BNConvAE` and :class:`BNConvVAE`.
  The decoder's last layer is followed by a sigmoid only: normalising or dropping out the
  output pixels would stop them from being probabilities.
* :class:`SmallConvVAE`: two unpadded 3 x 3 convolutions (16 and 32 channels) to a Gaussian code,
  the mirror image back to Bernoulli pixel probabilities.

The VAEs have ``encode`` (images -> ``(mu, logstd)``) and ``decode`` (codes -> decoder output)
and no ``forward``: drawing the code is the training step's job (the reparameterisation is a
graded exercise of the chapter ae_to_cvae, so the package does not do it outside its reference).
Bodies between ``# BEGIN REFERENCE`` and ``# END REFERENCE`` are graded exercises of the chapter.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "BNConvAE",
    "BNConvDecoder",
    "BNConvEncoder",
    "BNConvVAE",
    "CategoricalConvVAE",
    "ConvDecoder",
    "ConvEncoder",
    "SmallConvVAE",
    "bn_block",
]


# ----------------------------------------------------------------------------------------------
# the categorical conv VAE (4-bit images)


class ConvEncoder(nn.Module):
    """Images (N, in_channels, 28, 28) -> ``(mu, logstd)``, each (N, nz).

    Five 3 x 3 convolutions with padding 1 and GELUs: ``in -> h`` (stride 2, 28 -> 14),
    ``h -> h``, ``h -> 2h`` (stride 2, 14 -> 7), ``2h -> 2h``, ``2h -> 2h`` (stride 2, 7 -> 4);
    flatten; one ``Linear(2h * 16, 2 * nz)``, whose first ``nz`` outputs are the means and the
    last ``nz`` the log standard deviations.
    """

    def __init__(self, nz: int, hidden: int = 32, in_channels: int = 1):
        super().__init__()
        self.nz = nz
        # BEGIN REFERENCE
        h = hidden
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, h, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(h, h, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(h, 2 * h, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * h, 2 * h, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * h, 2 * h, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(2 * h * 4 * 4, 2 * nz),
        )
        # END REFERENCE

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # BEGIN REFERENCE
        mu, logstd = self.net(x).chunk(2, dim=1)
        return mu, logstd
        # END REFERENCE


class ConvDecoder(nn.Module):
    """Codes (N, nz) -> logits (N, levels, 28, 28): one categorical distribution per pixel.

    ``Linear(nz, 2h * 16)``, GELU, reshape to (2h, 4, 4); transposed 3 x 3 convolutions with
    stride 2 and padding 1 take 4 -> 7 (output_padding 0), 7 -> 14 and 14 -> 28 (output_padding 1),
    each of the first two followed by a GELU, a 3 x 3 convolution (padding 1) and a GELU. Channels:
    ``2h -> 2h -> h -> levels``. No activation at the end: the outputs are logits.
    """

    def __init__(self, nz: int, levels: int = 16, hidden: int = 32):
        super().__init__()
        self.nz, self.levels = nz, levels
        # BEGIN REFERENCE
        h = hidden
        self.linear = nn.Sequential(nn.Linear(nz, 2 * h * 4 * 4), nn.GELU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * h, 2 * h, 3, stride=2, padding=1, output_padding=0),
            nn.GELU(),  # 4 -> 7
            nn.Conv2d(2 * h, 2 * h, 3, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(2 * h, h, 3, stride=2, padding=1, output_padding=1),
            nn.GELU(),  # 7 -> 14
            nn.Conv2d(h, h, 3, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(h, levels, 3, stride=2, padding=1, output_padding=1),  # 14 -> 28
        )
        # END REFERENCE

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # BEGIN REFERENCE
        h = self.linear(z)
        return self.net(h.reshape(len(z), -1, 4, 4))
        # END REFERENCE


class CategoricalConvVAE(nn.Module):
    """A VAE over images of ``levels`` grey levels: any encoder giving ``(mu, logstd)`` and any
    decoder giving per-pixel logits ``(N, levels, H, W)``.

    ``encode`` takes integer levels (N, 1, H, W) in ``[0, levels)``; the encoder sees them scaled
    to [0, 1].
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, nz: int, levels: int = 16):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.nz, self.levels = nz, levels

    @classmethod
    def build(cls, nz: int, levels: int = 16, hidden: int = 32) -> CategoricalConvVAE:
        """The chapter's model with genlab's encoder and decoder."""
        return cls(ConvEncoder(nz, hidden), ConvDecoder(nz, levels, hidden), nz, levels)

    def scale(self, levels: torch.Tensor) -> torch.Tensor:
        """Integer levels -> float input in [0, 1] for the encoder."""
        return levels.to(torch.float32) / (self.levels - 1)

    def encode(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(self.scale(levels))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits (N, levels, H, W)."""
        return self.decoder(z)

    @torch.no_grad()
    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """The expected grey value of every pixel under the decoder, in [0, 1]: (N, 1, H, W)."""
        probs = self.decoder(z).softmax(dim=1)
        grey = torch.arange(self.levels, device=probs.device, dtype=probs.dtype) / (self.levels - 1)
        return (probs * grey.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images drawn from the decoder at codes ``z``: one level per pixel, as floats in [0, 1]."""
        probs = self.decoder(z).softmax(dim=1)  # (N, K, H, W)
        n, k, h, w = probs.shape
        flat = probs.permute(0, 2, 3, 1).reshape(-1, k)
        if generator is not None and generator.device != flat.device:
            draws = torch.multinomial(flat.cpu(), 1, generator=generator).to(flat.device)
        else:
            draws = torch.multinomial(flat, 1, generator=generator)
        return draws.reshape(n, 1, h, w).to(probs.dtype) / (k - 1)


# ----------------------------------------------------------------------------------------------
# BatchNorm -> LeakyReLU -> Dropout blocks and a 2-D code


def bn_block(channels: int, dropout: float = 0.25) -> nn.Sequential:
    """BatchNorm2d -> LeakyReLU -> Dropout, the block after every hidden convolution."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.LeakyReLU(0.01), nn.Dropout(dropout))


class BNConvEncoder(nn.Module):
    """(N, 1, 28, 28) -> (N, out): four 3 x 3 convolutions (1 -> 32 -> 64 -> 64 -> 64; strides 1, 2,
    2, 1; padding 1), each followed by :func:`bn_block`, then ``Linear(64 * 7 * 7, out)``."""

    def __init__(self, out: int, dropout: float = 0.25):
        super().__init__()
        chans, strides = (1, 32, 64, 64, 64), (1, 2, 2, 1)
        layers: list[nn.Module] = []
        for c_in, c_out, s in zip(chans[:-1], chans[1:], strides):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=s, padding=1), bn_block(c_out, dropout)]
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 7 * 7, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BNConvDecoder(nn.Module):
    """(N, nz) -> pixel probabilities (N, 1, 28, 28): ``Linear(nz, 64 * 7 * 7)``, reshape, three
    transposed convolutions (64 -> 64 -> 64 -> 32; strides 1, 2, 2), each followed by
    :func:`bn_block`, and a last transposed convolution 32 -> 1 followed by a sigmoid alone."""

    def __init__(self, nz: int, dropout: float = 0.25):
        super().__init__()
        self.linear = nn.Linear(nz, 64 * 7 * 7)
        layers: list[nn.Module] = []
        for c_in, c_out, s in ((64, 64, 1), (64, 64, 2), (64, 32, 2)):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=s, padding=1, output_padding=s - 1),
                bn_block(c_out, dropout),
            ]
        # The output layer: no BatchNorm (it would force every batch of pixels to mean 0 and
        # variance 1) and no Dropout (it would black out pixels of the reconstruction).
        layers += [nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.linear(z).reshape(len(z), 64, 7, 7))


class BNConvAE(nn.Module):
    """Deterministic auto-encoder with a ``nz``-dimensional code (2 by default)."""

    def __init__(self, nz: int = 2, dropout: float = 0.25):
        super().__init__()
        self.nz = nz
        self.encoder = BNConvEncoder(nz, dropout)
        self.decoder = BNConvDecoder(nz, dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class BNConvVAE(nn.Module):
    """The same networks as :class:`BNConvAE` with a Gaussian code: the encoder outputs
    ``2 * nz`` numbers, the means and then the log standard deviations."""

    def __init__(self, nz: int = 2, dropout: float = 0.25):
        super().__init__()
        self.nz = nz
        self.encoder = BNConvEncoder(2 * nz, dropout)
        self.decoder = BNConvDecoder(nz, dropout)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logstd = self.encoder(x).chunk(2, dim=1)
        return mu, logstd

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


# ----------------------------------------------------------------------------------------------
# the small Fashion-MNIST VAE


class SmallConvVAE(nn.Module):
    """Two unpadded 3 x 3 convolutions (1 -> c1 -> c2, ReLU; 28 -> 26 -> 24) to ``(mu, logstd)`` of
    size ``nz`` through two linear heads; the decoder maps back with a linear layer and ReLU,
    reshapes to (c2, 24, 24) and applies two transposed convolutions (ReLU, then a sigmoid)."""

    def __init__(self, nz: int = 16, c1: int = 16, c2: int = 32, side: int = 28):
        super().__init__()
        self.nz, self.c2 = nz, c2
        self.inner = side - 2 * 2  # two unpadded 3 x 3 convolutions each remove 2 pixels
        flat = c2 * self.inner**2
        self.convs = nn.Sequential(nn.Conv2d(1, c1, 3), nn.ReLU(), nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.Flatten())
        self.mean = nn.Linear(flat, nz)
        self.logstd = nn.Linear(flat, nz)
        self.expand = nn.Sequential(nn.Linear(nz, flat), nn.ReLU())
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 3), nn.ReLU(), nn.ConvTranspose2d(c1, 1, 3), nn.Sigmoid()
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x)
        return self.mean(h), self.logstd(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.expand(z).reshape(len(z), self.c2, self.inner, self.inner))
