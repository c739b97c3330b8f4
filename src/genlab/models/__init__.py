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

__all__ = ["AutoEncoder", "CVAE", "Decoder", "Encoder", "VAE", "condition", "one_hot", "reparameterize"]
