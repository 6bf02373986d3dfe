"""D3PM: discrete diffusion with structured transition matrices (Austin et al., 2021)."""

from .continuous import absorbing_ctmc_loss as absorbing_ctmc_loss
from .loss import (
    d3pm_bound_bpd as d3pm_bound_bpd,
    d3pm_bound_terms as d3pm_bound_terms,
    d3pm_cross_entropy as d3pm_cross_entropy,
    d3pm_hybrid_loss as d3pm_hybrid_loss,
    d3pm_loss as d3pm_loss,
    d3pm_prior_term as d3pm_prior_term,
    d3pm_vb_term as d3pm_vb_term,
)
from .nn import ImageX0Net as ImageX0Net, SequenceTransformer as SequenceTransformer
from .process import (
    AbstractReverseParameterisation as AbstractReverseParameterisation,
    JointMixture as JointMixture,
    PosteriorMixture as PosteriorMixture,
    q_posterior_logits as q_posterior_logits,
    q_posterior_probs as q_posterior_probs,
    q_probs as q_probs,
    q_sample as q_sample,
    safe_log as safe_log,
    sample_logits as sample_logits,
)
from .sampling import d3pm_sample as d3pm_sample
from .schedules import (
    AbstractBetaSchedule as AbstractBetaSchedule,
    CosineBetaSchedule as CosineBetaSchedule,
    LinearBetaSchedule as LinearBetaSchedule,
    MutualInformationSchedule as MutualInformationSchedule,
)
from .text import (
    TEXT8_ALPHABET as TEXT8_ALPHABET,
    load_text8 as load_text8,
    normalise_text8 as normalise_text8,
    pydoc_corpus as pydoc_corpus,
    text8_decode as text8_decode,
    text8_encode as text8_encode,
    text_chunks as text_chunks,
)
from .transitions import (
    AbsorbingTransition as AbsorbingTransition,
    AbstractTransition as AbstractTransition,
    EmbeddingNeighbourTransition as EmbeddingNeighbourTransition,
    GaussianTransition as GaussianTransition,
    UniformTransition as UniformTransition,
)
