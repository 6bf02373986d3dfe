from .base import AbstractSampler as AbstractSampler, SampleResult as SampleResult
from .ddim import DDIM as DDIM
from .discretisation import (
    AbstractTimeDiscretisation as AbstractTimeDiscretisation,
    KarrasTime as KarrasTime,
    LogSNRUniformTime as LogSNRUniformTime,
    UniformTime as UniformTime,
    VPTime as VPTime,
)
from .distilled import DistillationGrid as DistillationGrid, DistilledDDIM as DistilledDDIM
from .dpm_solver import DPMSolverPP as DPMSolverPP
from .edm import EDMHeun as EDMHeun
from .metrics import sliced_wasserstein as sliced_wasserstein
from .predictor_corrector import (
    AbstractCorrector as AbstractCorrector,
    AbstractPredictor as AbstractPredictor,
    Ancestral as Ancestral,
    EulerMaruyama as EulerMaruyama,
    Langevin as Langevin,
    NoCorrector as NoCorrector,
    PredictorCorrector as PredictorCorrector,
    ReverseDiffusion as ReverseDiffusion,
)
from .probability_flow import ProbabilityFlow as ProbabilityFlow
from .reverse_sde import ReverseSDE as ReverseSDE
from .sample import sample as sample
from .unipc import AbstractUniBh as AbstractUniBh, Bh1 as Bh1, Bh2 as Bh2, UniPC as UniPC
