"""skebm: scikit-learn compatible energy-based models, with torch inside."""

from ._monitors import ConvergenceDivergedError
from ._table import UnseenCategoryError
from .classifier import NCESoftmaxClassifier
from .impute import DensityImputer
from .nce import NCEDensity
from .outlier import DensityOutlierDetector
from .rbm import PCDRestrictedBoltzmann
from .shortrun import ShortRunEBM

__all__ = [
    "ConvergenceDivergedError",
    "DensityImputer",
    "DensityOutlierDetector",
    "NCEDensity",
    "NCESoftmaxClassifier",
    "PCDRestrictedBoltzmann",
    "ShortRunEBM",
    "UnseenCategoryError",
]
__version__ = "0.1.0"
