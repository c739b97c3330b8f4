"""Model zoo of the workbook; each model lives in the module named for its family."""
from genlab.models.mlp import (
    CVAE,
    VAE,
    AutoEncoder,
    Decoder,
    Encoder,
    condition,
    one_hot,
    reparameterize,
)
from genlab.models.harmonic import HarmonicVAE

__all__ = ["AutoEncoder", "CVAE", "Decoder", "Encoder", "HarmonicVAE", "VAE", "condition", "one_hot", "reparameterize"]
from genlab.models.resnet import CifarResNet, resnet18

__all__ += ["CifarResNet", "resnet18"]
from genlab.models.conv import BNConvAE, BNConvVAE, CategoricalConvVAE, ConvDecoder, ConvEncoder, SmallConvVAE

__all__ += ["BNConvAE", "BNConvVAE", "CategoricalConvVAE", "ConvDecoder", "ConvEncoder", "SmallConvVAE"]
from genlab.models.dcgan import Discriminator as DCGANDiscriminator, Generator as DCGANGenerator

__all__ += ["DCGANDiscriminator", "DCGANGenerator"]
