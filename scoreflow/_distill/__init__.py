"""Distillation of samplers into few-step students: progressive distillation and guided (w-conditioned)
distillation, and the `Distilled` record of the grid a student was trained for."""

from .._sampler.distilled import DistillationGrid as DistillationGrid
from .distilled import Distilled as Distilled
from .driver import (
    DistillationStage as DistillationStage,
    GuidedStage as GuidedStage,
    distill as distill,
    guidance_student as guidance_student,
    guided_distill as guided_distill,
    restore_student as restore_student,
)
from .guided import (
    guided_distillation_loss as guided_distillation_loss,
    guided_distillation_target as guided_distillation_target,
)
from .network import GuidanceWeightMLP as GuidanceWeightMLP, GuidanceWeightNet as GuidanceWeightNet
from .progressive import (
    progressive_distillation_loss as progressive_distillation_loss,
    progressive_distillation_target as progressive_distillation_target,
)
from .weighting import TruncatedSNRWeighting as TruncatedSNRWeighting
