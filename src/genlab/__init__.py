"""genlab: the shared solution package of the generative-models workbook.

Chapters import what is not the exercise at hand from here: data, models, losses,
training harness, plotting, attacks and Lipschitz estimators.
"""

from genlab.runtime import Profile, device, profile, seed_everything

__version__ = "0.1.0"

__all__ = ["Profile", "device", "profile", "seed_everything", "__version__"]
