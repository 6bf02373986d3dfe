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
