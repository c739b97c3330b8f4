"""Model zoo of the workbook; each model lives in the module named for its family."""

from genlab.models.conv import BNConvAE, BNConvVAE, CategoricalConvVAE, ConvDecoder, ConvEncoder, SmallConvVAE
from genlab.models.dcgan import Discriminator as DCGANDiscriminator
from genlab.models.dcgan import Generator as DCGANGenerator
from genlab.models.harmonic import HarmonicVAE
from genlab.models.mlp import CVAE, VAE, AutoEncoder, Decoder, Encoder, condition, one_hot, reparameterize
from genlab.models.resnet import CifarResNet, resnet18

__all__ = [
    "AutoEncoder", "CVAE", "Decoder", "Encoder", "HarmonicVAE", "VAE", "condition", "one_hot", "reparameterize",
    "CifarResNet", "resnet18",
    "BNConvAE", "BNConvVAE", "CategoricalConvVAE", "ConvDecoder", "ConvEncoder", "SmallConvVAE",
    "DCGANDiscriminator", "DCGANGenerator",
]  # fmt: skip
