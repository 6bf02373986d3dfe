from .base import AbstractScoreModel as AbstractScoreModel
from .conversions import (
    eps_from_score as eps_from_score,
    eps_from_x0 as eps_from_x0,
    score_from_eps as score_from_eps,
    score_from_x0 as score_from_x0,
    v_from_eps_x0 as v_from_eps_x0,
    x0_from_eps as x0_from_eps,
    x0_from_score as x0_from_score,
)
from .parameterisation import (
    AbstractParameterisation as AbstractParameterisation,
    EDMPreconditioning as EDMPreconditioning,
    EpsPrediction as EpsPrediction,
    Scalings as Scalings,
    ScorePrediction as ScorePrediction,
    VPrediction as VPrediction,
    X0Prediction as X0Prediction,
)
from .score_model import ScoreModel as ScoreModel
