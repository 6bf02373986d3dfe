"""scoreflow: diffusion and score-based probabilistic modelling in JAX.

Every public name is re-exported here from a private one-concept module.
"""

# --- core: schedules, SDEs, score-model contract, analytic references ---
from ._model import (
    AbstractParameterisation as AbstractParameterisation,
    AbstractScoreModel as AbstractScoreModel,
    EDMPreconditioning as EDMPreconditioning,
    EpsPrediction as EpsPrediction,
    Scalings as Scalings,
    ScoreModel as ScoreModel,
    ScorePrediction as ScorePrediction,
    VPrediction as VPrediction,
    X0Prediction as X0Prediction,
    eps_from_score as eps_from_score,
    eps_from_x0 as eps_from_x0,
    score_from_eps as score_from_eps,
    score_from_x0 as score_from_x0,
    v_from_eps_x0 as v_from_eps_x0,
    x0_from_eps as x0_from_eps,
    x0_from_score as x0_from_score,
)
from ._reference import AnalyticScore as AnalyticScore, GaussianMixture as GaussianMixture, marginal as marginal
from ._schedule import (
    AbstractSchedule as AbstractSchedule,
    CosineSchedule as CosineSchedule,
    FixedLinearSchedule as FixedLinearSchedule,
    LearnedSchedule as LearnedSchedule,
    LinearSchedule as LinearSchedule,
)
from ._sde import AbstractSDE as AbstractSDE, EDMSDE as EDMSDE, SubVPSDE as SubVPSDE, VESDE as VESDE, VPSDE as VPSDE

# --- networks (nn) ---

# --- training objectives (losses) ---

# --- samplers ---

# --- likelihood ---

# --- discrete diffusion (D3PM) ---

# --- edges: data, checkpoints, training loop (import scoreflow.data / scoreflow.train for these) ---

__version__ = "0.1.0"
