from .decoder import (
    AbstractDecoder as AbstractDecoder,
    DiscreteUniformDecoder as DiscreteUniformDecoder,
    DiscretisedGaussianDecoder as DiscretisedGaussianDecoder,
)
from .dsm import batch_dsm_loss as batch_dsm_loss, dsm_loss as dsm_loss
from .labels import label_dropout as label_dropout
from .time_sampling import (
    AbstractTimeSampler as AbstractTimeSampler,
    AbstractUnitTimeSampler as AbstractUnitTimeSampler,
    AntitheticTimeSampler as AntitheticTimeSampler,
    ImportanceTimeSampler as ImportanceTimeSampler,
    LowDiscrepancyTimeSampler as LowDiscrepancyTimeSampler,
    UniformTimeSampler as UniformTimeSampler,
)
from .vdm import (
    VLBTerms as VLBTerms,
    batch_vdm_vlb as batch_vdm_vlb,
    learned_schedule_interior as learned_schedule_interior,
    vdm_loss_and_grads as vdm_loss_and_grads,
    vdm_vlb as vdm_vlb,
)
from .weighting import (
    AbstractLogSNRWeighting as AbstractLogSNRWeighting,
    AbstractWeighting as AbstractWeighting,
    EDMMonotoneWeighting as EDMMonotoneWeighting,
    EDMWeighting as EDMWeighting,
    ELBOWeighting as ELBOWeighting,
    LikelihoodWeighting as LikelihoodWeighting,
    SigmoidWeighting as SigmoidWeighting,
    SimpleWeighting as SimpleWeighting,
    VWeighting as VWeighting,
)
