"""scoreflow: diffusion and score-based probabilistic modelling in JAX.

Every public name is re-exported here from a private one-concept module.
"""

# --- core: schedules, SDEs, score-model contract, analytic references ---
# --- discrete diffusion (D3PM) ---
from ._discrete import (
    TEXT8_ALPHABET as TEXT8_ALPHABET,
    AbsorbingTransition as AbsorbingTransition,
    AbstractBetaSchedule as AbstractBetaSchedule,
    AbstractReverseParameterisation as AbstractReverseParameterisation,
    AbstractTransition as AbstractTransition,
    CosineBetaSchedule as CosineBetaSchedule,
    EmbeddingNeighbourTransition as EmbeddingNeighbourTransition,
    GaussianTransition as GaussianTransition,
    ImageX0Net as ImageX0Net,
    JointMixture as JointMixture,
    LinearBetaSchedule as LinearBetaSchedule,
    MutualInformationSchedule as MutualInformationSchedule,
    PosteriorMixture as PosteriorMixture,
    SequenceTransformer as SequenceTransformer,
    UniformTransition as UniformTransition,
    absorbing_ctmc_loss as absorbing_ctmc_loss,
    d3pm_bound_bpd as d3pm_bound_bpd,
    d3pm_bound_terms as d3pm_bound_terms,
    d3pm_cross_entropy as d3pm_cross_entropy,
    d3pm_hybrid_loss as d3pm_hybrid_loss,
    d3pm_loss as d3pm_loss,
    d3pm_prior_term as d3pm_prior_term,
    d3pm_sample as d3pm_sample,
    d3pm_vb_term as d3pm_vb_term,
    load_text8 as load_text8,
    normalise_text8 as normalise_text8,
    pydoc_corpus as pydoc_corpus,
    q_posterior_logits as q_posterior_logits,
    q_posterior_probs as q_posterior_probs,
    q_probs as q_probs,
    q_sample as q_sample,
    safe_log as safe_log,
    sample_logits as sample_logits,
    text8_decode as text8_decode,
    text8_encode as text8_encode,
    text_chunks as text_chunks,
)

# --- distillation: few-step students and the grid they were distilled for ---
from ._distill import (
    DistillationGrid as DistillationGrid,
    DistillationStage as DistillationStage,
    Distilled as Distilled,
    GuidanceWeightMLP as GuidanceWeightMLP,
    TruncatedSNRWeighting as TruncatedSNRWeighting,
    distill as distill,
    guided_distillation_loss as guided_distillation_loss,
    guided_distillation_target as guided_distillation_target,
    progressive_distillation_loss as progressive_distillation_loss,
    progressive_distillation_target as progressive_distillation_target,
)

# --- energy-based models: energies as score models, MCMC, diffusion recovery likelihood ---
from ._energy import (
    HMC as HMC,
    MALA as MALA,
    AbstractEnergy as AbstractEnergy,
    AbstractLevelWeighting as AbstractLevelWeighting,
    AbstractLogRatio as AbstractLogRatio,
    AbstractMCMCKernel as AbstractMCMCKernel,
    AbstractPriorSampling as AbstractPriorSampling,
    AbstractStepSize as AbstractStepSize,
    ChainSampling as ChainSampling,
    ConvEnergy as ConvEnergy,
    EnergyMLP as EnergyMLP,
    EnergyScoreModel as EnergyScoreModel,
    ExactGaussianSampling as ExactGaussianSampling,
    LinearLogRatio as LinearLogRatio,
    LogNormaliserResult as LogNormaliserResult,
    MCMCResult as MCMCResult,
    MixtureEnergy as MixtureEnergy,
    MLPLogRatio as MLPLogRatio,
    MultiStagePrior as MultiStagePrior,
    PaperStepSize as PaperStepSize,
    QuadraticEnergy as QuadraticEnergy,
    QuadraticLogRatio as QuadraticLogRatio,
    RecoveryEBM as RecoveryEBM,
    RecoveryLossInfo as RecoveryLossInfo,
    RecoverySchedule as RecoverySchedule,
    RelativeStepSize as RelativeStepSize,
    SigmaRatioWeighting as SigmaRatioWeighting,
    StageInfo as StageInfo,
    UnadjustedLangevin as UnadjustedLangevin,
    UniformLevelWeighting as UniformLevelWeighting,
    fit_multistage as fit_multistage,
    init_recovery_optimiser as init_recovery_optimiser,
    langevin_chain as langevin_chain,
    mcmc as mcmc,
    nce_loss as nce_loss,
    nce_standard_errors as nce_standard_errors,
    recovery_log_density as recovery_log_density,
    recovery_loss as recovery_loss,
    recovery_loss_from_samples as recovery_loss_from_samples,
    recovery_optimiser as recovery_optimiser,
    recovery_pair as recovery_pair,
    recovery_sample as recovery_sample,
    recovery_update as recovery_update,
    smc_log_normaliser as smc_log_normaliser,
    train_ratio as train_ratio,
)


# --- guidance: score models combining score models ---
from ._guidance import (
    AbstractGuidanceWeight as AbstractGuidanceWeight,
    AbstractGuided as AbstractGuided,
    AbstractObservation as AbstractObservation,
    ClassifierFreeGuidance as ClassifierFreeGuidance,
    ClassifierGuidance as ClassifierGuidance,
    Constant as Constant,
    Guided as Guided,
    Interval as Interval,
    LabelledMixture as LabelledMixture,
    LabelledScore as LabelledScore,
    Linear as Linear,
    Mask as Mask,
    OrthogonalSplit as OrthogonalSplit,
    Ramp as Ramp,
    ReconstructionGuidance as ReconstructionGuidance,
    Replacement as Replacement,
    StochasticConditioning as StochasticConditioning,
    condition as condition,
    count_evaluations as count_evaluations,
    log_evidence as log_evidence,
)
from ._jaxlib_guard import warn_if_affected as _warn_if_affected

# --- likelihood ---
from ._likelihood import (
    AbstractDequantisation as AbstractDequantisation,
    AbstractDivergence as AbstractDivergence,
    AbstractErrorNorm as AbstractErrorNorm,
    AbstractProbeDistribution as AbstractProbeDistribution,
    AbstractStateVariable as AbstractStateVariable,
    AbstractTimeVariable as AbstractTimeVariable,
    AffineScaling as AffineScaling,
    AugmentedRMSNorm as AugmentedRMSNorm,
    BitsPerDimResult as BitsPerDimResult,
    DataState as DataState,
    DiscretisedBound as DiscretisedBound,
    ExactTrace as ExactTrace,
    Gaussian as Gaussian,
    Hutchinson as Hutchinson,
    LikelihoodResult as LikelihoodResult,
    LogSNRVariable as LogSNRVariable,
    Orthogonal as Orthogonal,
    Rademacher as Rademacher,
    ScaledState as ScaledState,
    SigmaVariable as SigmaVariable,
    StateDensityNorm as StateDensityNorm,
    TimeVariable as TimeVariable,
    UniformDequantisation as UniformDequantisation,
    bits_per_dim as bits_per_dim,
    log_likelihood as log_likelihood,
)

# --- training objectives (losses) ---
from ._loss import (
    AbstractDecoder as AbstractDecoder,
    AbstractLogSNRWeighting as AbstractLogSNRWeighting,
    AbstractTimeSampler as AbstractTimeSampler,
    AbstractUnitTimeSampler as AbstractUnitTimeSampler,
    AbstractWeighting as AbstractWeighting,
    AntitheticTimeSampler as AntitheticTimeSampler,
    DiscreteUniformDecoder as DiscreteUniformDecoder,
    DiscretisedGaussianDecoder as DiscretisedGaussianDecoder,
    EDMMonotoneWeighting as EDMMonotoneWeighting,
    EDMWeighting as EDMWeighting,
    ELBOWeighting as ELBOWeighting,
    ImportanceTimeSampler as ImportanceTimeSampler,
    LikelihoodWeighting as LikelihoodWeighting,
    LowDiscrepancyTimeSampler as LowDiscrepancyTimeSampler,
    SigmoidWeighting as SigmoidWeighting,
    SimpleWeighting as SimpleWeighting,
    UniformTimeSampler as UniformTimeSampler,
    VLBTerms as VLBTerms,
    VWeighting as VWeighting,
    batch_dsm_loss as batch_dsm_loss,
    batch_vdm_vlb as batch_vdm_vlb,
    dsm_loss as dsm_loss,
    learned_schedule_interior as learned_schedule_interior,
    vdm_loss_and_grads as vdm_loss_and_grads,
    vdm_vlb as vdm_vlb,
)
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

# --- networks (nn) ---
from ._nn import (
    MLP as MLP,
    AbstractEmbedding as AbstractEmbedding,
    FourierEmbedding as FourierEmbedding,
    SinusoidalEmbedding as SinusoidalEmbedding,
    UNet as UNet,
)
from ._reference import AnalyticScore as AnalyticScore, GaussianMixture as GaussianMixture, marginal as marginal

# --- samplers ---
from ._sampler import (
    DDIM as DDIM,
    AbstractCorrector as AbstractCorrector,
    AbstractPredictor as AbstractPredictor,
    AbstractSampler as AbstractSampler,
    AbstractTimeDiscretisation as AbstractTimeDiscretisation,
    Ancestral as Ancestral,
    DistilledDDIM as DistilledDDIM,
    DPMSolverPP as DPMSolverPP,
    EDMHeun as EDMHeun,
    EulerMaruyama as EulerMaruyama,
    KarrasTime as KarrasTime,
    Langevin as Langevin,
    LogSNRUniformTime as LogSNRUniformTime,
    NoCorrector as NoCorrector,
    PredictorCorrector as PredictorCorrector,
    ProbabilityFlow as ProbabilityFlow,
    ReverseDiffusion as ReverseDiffusion,
    ReverseSDE as ReverseSDE,
    SampleResult as SampleResult,
    UniformTime as UniformTime,
    sample as sample,
    sliced_wasserstein as sliced_wasserstein,
)
from ._schedule import (
    AbstractSchedule as AbstractSchedule,
    CosineSchedule as CosineSchedule,
    FixedLinearSchedule as FixedLinearSchedule,
    LearnedSchedule as LearnedSchedule,
    LinearSchedule as LinearSchedule,
)
from ._sde import (
    EDMSDE as EDMSDE,
    VESDE as VESDE,
    VPSDE as VPSDE,
    AbstractSDE as AbstractSDE,
    SubVPSDE as SubVPSDE,
    time_from_log_snr as time_from_log_snr,
)


# --- edges: data, checkpoints, training loop (import scoreflow.data / scoreflow.train for these) ---

__version__ = "0.1.0"

_warn_if_affected()  # jaxlib 0.10.0-0.10.2 CPU LAPACK deadlock: see _jaxlib_guard
