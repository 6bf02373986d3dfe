from .bits_per_dim import BitsPerDimResult as BitsPerDimResult, bits_per_dim as bits_per_dim
from .dequantisation import (
    AbstractDequantisation as AbstractDequantisation,
    AffineScaling as AffineScaling,
    DiscretisedBound as DiscretisedBound,
    UniformDequantisation as UniformDequantisation,
)
from .divergence import (
    AbstractDivergence as AbstractDivergence,
    AbstractProbeDistribution as AbstractProbeDistribution,
    ExactTrace as ExactTrace,
    Gaussian as Gaussian,
    Hutchinson as Hutchinson,
    Orthogonal as Orthogonal,
    Rademacher as Rademacher,
)
from .error_norm import (
    AbstractErrorNorm as AbstractErrorNorm,
    AugmentedRMSNorm as AugmentedRMSNorm,
    NatsNorm as NatsNorm,
    StateDensityNorm as StateDensityNorm,
)
from .log_likelihood import LikelihoodResult as LikelihoodResult, log_likelihood as log_likelihood
from .state_variable import (
    AbstractStateVariable as AbstractStateVariable,
    DataState as DataState,
    ScaledState as ScaledState,
)
from .time_variable import (
    AbstractTimeVariable as AbstractTimeVariable,
    LogSNRVariable as LogSNRVariable,
    SigmaVariable as SigmaVariable,
    TimeVariable as TimeVariable,
)
