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
