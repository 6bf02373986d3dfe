from .energy import (
    AbstractEnergy as AbstractEnergy,
    EnergyScoreModel as EnergyScoreModel,
    MixtureEnergy as MixtureEnergy,
    QuadraticEnergy as QuadraticEnergy,
)
from .mcmc import (
    HMC as HMC,
    MALA as MALA,
    AbstractMCMCKernel as AbstractMCMCKernel,
    LogNormaliserResult as LogNormaliserResult,
    MCMCResult as MCMCResult,
    UnadjustedLangevin as UnadjustedLangevin,
    langevin_chain as langevin_chain,
    mcmc as mcmc,
    smc_log_normaliser as smc_log_normaliser,
)
from .nce import (
    AbstractLogRatio as AbstractLogRatio,
    AbstractPriorSampling as AbstractPriorSampling,
    ChainSampling as ChainSampling,
    ExactGaussianSampling as ExactGaussianSampling,
    LinearLogRatio as LinearLogRatio,
    MLPLogRatio as MLPLogRatio,
    MultiStagePrior as MultiStagePrior,
    QuadraticLogRatio as QuadraticLogRatio,
    StageInfo as StageInfo,
    fit_multistage as fit_multistage,
    nce_loss as nce_loss,
    nce_standard_errors as nce_standard_errors,
    train_ratio as train_ratio,
)
from .nn import ConvEnergy as ConvEnergy, EnergyMLP as EnergyMLP
from .recovery import (
    AbstractLevelWeighting as AbstractLevelWeighting,
    RecoveryEBM as RecoveryEBM,
    RecoveryLossInfo as RecoveryLossInfo,
    RecoverySchedule as RecoverySchedule,
    SigmaRatioWeighting as SigmaRatioWeighting,
    UniformLevelWeighting as UniformLevelWeighting,
    init_recovery_optimiser as init_recovery_optimiser,
    recovery_log_density as recovery_log_density,
    recovery_loss as recovery_loss,
    recovery_loss_from_samples as recovery_loss_from_samples,
    recovery_optimiser as recovery_optimiser,
    recovery_pair as recovery_pair,
    recovery_sample as recovery_sample,
    recovery_update as recovery_update,
)
