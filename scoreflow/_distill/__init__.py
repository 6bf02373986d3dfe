"""Distillation of samplers into few-step students: progressive distillation and guided (w-conditioned)
distillation, and the `Distilled` record of the grid a student was trained for."""

from .._sampler.distilled import DistillationGrid as DistillationGrid
from .distilled import Distilled as Distilled
from .driver import DistillationStage as DistillationStage, distill as distill
from .guided import (
    guided_distillation_loss as guided_distillation_loss,
    guided_distillation_target as guided_distillation_target,
)
from .network import GuidanceWeightMLP as GuidanceWeightMLP
from .progressive import (
    progressive_distillation_loss as progressive_distillation_loss,
    progressive_distillation_target as progressive_distillation_target,
)
from .weighting import TruncatedSNRWeighting as TruncatedSNRWeighting
