import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._sde import AbstractSDE
from .base import AbstractSampler, Hook, ScoreFn, apply_hook
from .discretisation import AbstractTimeDiscretisation, LogSNRUniformTime


class DPMSolverPP(AbstractSampler):
    r"""DPM-Solver++ multistep (Lu et al., 2022), data prediction in $\lambda = \tfrac12\log\mathrm{SNR}$.

    With $h_i = \lambda_{t_{i+1}} - \lambda_{t_i}$ and $\hat x_0$ from the score:
    $x_{i+1} = (\sigma_{i+1}/\sigma_i) x_i - \alpha_{i+1}(e^{-h_i} - 1) D_i$, where $D_i = \hat x_0^{(i)}$ for
    `order=1` (and for the first step) and
    $D_i = (1 + \tfrac1{2r_i})\hat x_0^{(i)} - \tfrac1{2r_i}\hat x_0^{(i-1)}$, $r_i = h_{i-1}/h_i$, for `order=2`
    (the "2M" solver). One model evaluation per step; global order = `order`. Any linear SDE.
    """

    steps: int = eqx.field(default=20, static=True)
    order: int = eqx.field(default=2, static=True)
    discretisation: AbstractTimeDiscretisation = LogSNRUniformTime()

    def __check_init__(self):
        if self.steps < 1:
            raise ValueError(f"DPMSolverPP needs steps >= 1; got steps={self.steps}")
        if self.order not in (1, 2):
            raise ValueError(f"DPMSolverPP supports order 1 or 2; got order={self.order}")

    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        del key  # deterministic
        ts = self.discretisation.times(sde, self.steps, t0)

        def body(carry, inputs):
            x, x0_prev, h_prev = carry
            i, t, s = inputs
            alpha_t, sigma_t = sde.alpha_sigma(t)
            alpha_s, sigma_s = sde.alpha_sigma(s)
            h = 0.5 * (sde.log_snr(s) - sde.log_snr(t))
            x0 = (x + sigma_t**2 * score(t, x)) / alpha_t
            if self.order == 2:
                first = i == 0
                half_inv_r = jnp.where(first, 0.0, 0.5 * h / jnp.where(first, 1.0, h_prev))
                d = (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev
            else:
                d = x0
            x = (sigma_s / sigma_t) * x - alpha_s * jnp.expm1(-h) * d
            return (apply_hook(hook, s, x), x0, h), None

        init = (x_T, jnp.zeros_like(x_T), jnp.zeros((), ts.dtype))
        (x, _, _), _ = jax.lax.scan(body, init, (jnp.arange(self.steps), ts[:-1], ts[1:]))
        return x, jnp.asarray(self.steps, jnp.int32), diffrax.RESULTS.successful
