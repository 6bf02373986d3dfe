from .classifier import ClassifierGuidance as ClassifierGuidance
from .classifier_free import ClassifierFreeGuidance as ClassifierFreeGuidance
from .conditional import condition as condition, log_evidence as log_evidence
from .count import count_evaluations as count_evaluations
from .guided import AbstractGuided as AbstractGuided, Guided as Guided
from .labelled_mixture import LabelledMixture as LabelledMixture, LabelledScore as LabelledScore
from .observation import (
    AbstractObservation as AbstractObservation,
    Linear as Linear,
    Mask as Mask,
    OrthogonalSplit as OrthogonalSplit,
)
from .reconstruction import ReconstructionGuidance as ReconstructionGuidance
from .replacement import Replacement as Replacement
from .stochastic import StochasticConditioning as StochasticConditioning
from .weight import (
    AbstractGuidanceWeight as AbstractGuidanceWeight,
    Constant as Constant,
    Interval as Interval,
    Ramp as Ramp,
)
