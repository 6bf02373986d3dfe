r"""Loss weightings of progressive distillation (Salimans & Ho, 2022, sec. 4), as eps-space weights.

The distillation losses regress $\hat x$ on an $x$-space target; with $\lambda$ the log-SNR,
$\|\tilde\epsilon - \hat\epsilon\|^2 = e^{\lambda}\|\tilde x - \hat x\|^2$ at fixed $z_t$, so an $x$-space weight
$w_x$ is the eps-space weight $w = w_x e^{-\lambda}$ of `AbstractWeighting`:

- truncated SNR, $w_x = \max(e^\lambda, 1)$: `TruncatedSNRWeighting`, $w = \max(1, e^{-\lambda})$;
- SNR + 1, $w_x = e^\lambda + 1$ (the $v$-loss): the existing `VWeighting`, $w = 1 + e^{-\lambda}$.
"""

import jax.numpy as jnp

from .._custom_types import Scalar, ScalarLike
from .._loss import AbstractWeighting
from .._sde import AbstractSDE


class TruncatedSNRWeighting(AbstractWeighting):
    r"""$x$-space weight $\max(\mathrm{SNR}, 1)$ ("truncated SNR", Salimans & Ho, 2022, eq. 9); in eps space
    $w = \max(1, e^{-\lambda})$. Unlike the SNR weight of the $\epsilon$-loss it does not vanish as
    $\mathrm{SNR} \to 0$, where a one-step student must still predict $x$."""

    def weight(self, sde: AbstractSDE, t: ScalarLike) -> Scalar:
        return jnp.maximum(1.0, jnp.exp(-sde.log_snr(t)))
