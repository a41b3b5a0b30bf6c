"""skebm: scikit-learn compatible energy-based models, with torch inside."""

from ._base import ConvergenceDivergedError
from .nce import NCEDensity

__all__ = ["ConvergenceDivergedError", "NCEDensity"]
__version__ = "0.1.0"
