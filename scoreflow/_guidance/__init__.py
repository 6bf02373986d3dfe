from .classifier import ClassifierGuidance as ClassifierGuidance
from .classifier_free import ClassifierFreeGuidance as ClassifierFreeGuidance
from .guided import AbstractGuided as AbstractGuided, Guided as Guided
from .labelled_mixture import LabelledMixture as LabelledMixture, LabelledScore as LabelledScore
from .weight import (
    AbstractGuidanceWeight as AbstractGuidanceWeight,
    Constant as Constant,
    Interval as Interval,
    Ramp as Ramp,
)
