import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._misc import check_int, check_real
from .._sde import AbstractSDE
from .base import AbstractSampler, Hook, ScoreFn, apply_hook
from .discretisation import KarrasTime, time_from_log_snr


class EDMHeun(AbstractSampler):
    r"""Karras et al. (2022), Algorithm 2, for any linear SDE through $\tilde x = x/\alpha$ and
    $\tilde\sigma = \sigma/\alpha$, where the probability-flow ODE reads
    $d\tilde x/d\tilde\sigma = (\tilde x - D(\tilde x; \tilde\sigma))/\tilde\sigma = -\sigma\nabla\log p_t(x)$.

    `steps` noise levels $\tilde\sigma_0 = \tilde\sigma(T) > \dots > \tilde\sigma_{N-1} = \tilde\sigma(t_0)$ on the
    Karras grid (`rho`), then $\tilde\sigma_N = 0$; Heun steps, except the last (to $\tilde\sigma = 0$), which is
    Euler and returns the denoised sample: NFE = 2N - 1. Stochastic "churn" when `s_churn > 0`: at levels in
    [`s_tmin`, `s_tmax`] the level is raised to $\hat\sigma = \tilde\sigma_i(1 + \gamma)$,
    $\gamma = \min(s_{churn}/N, \sqrt2 - 1)$ (capped at $\tilde\sigma(T)$, the largest level the SDE has), by
    adding noise of std $s_{noise}\sqrt{\hat\sigma^2 - \tilde\sigma_i^2}$. The hook sees $x = \alpha\tilde x$
    after each step (with $t = 0$ after the last).
    """

    steps: int = eqx.field(default=18, static=True)
    rho: float = 7.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0

    def __check_init__(self):
        check_int("EDMHeun", "steps", self.steps, 1)
        check_real("EDMHeun", "rho", self.rho, 0.0, low_open=True)
        check_real("EDMHeun", "s_churn", self.s_churn, 0.0)
        check_real("EDMHeun", "s_noise", self.s_noise, 0.0)
        check_real("EDMHeun", "s_tmin", self.s_tmin, allow_inf=True)
        check_real("EDMHeun", "s_tmax", self.s_tmax, allow_inf=True)
        if not self.s_tmin <= self.s_tmax:
            raise ValueError(
                f"EDMHeun needs s_tmin <= s_tmax; got s_tmin={self.s_tmin}, s_tmax={self.s_tmax}"
            )

    def end_time(self, t0: float) -> float:
        return 0.0  # the last (Euler) step lands on sigma = 0

    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        n = self.steps
        ts = KarrasTime(self.rho).times(sde, n - 1, t0)  # n levels
        sig = jnp.exp(-0.5 * jax.vmap(sde.log_snr)(ts))
        sig_top = sig[0]
        churn = self.s_churn > 0

        def d(t, xt):  # dx~/dsigma~ at x~ = xt
            alpha, sigma = sde.alpha_sigma(t)
            return -sigma * score(t, alpha * xt)

        def hooked(t, xt):
            if hook is None:
                return xt
            alpha, _ = sde.alpha_sigma(t)
            return apply_hook(hook, t, alpha * xt) / alpha

        def raise_level(t, s_i, xt, k):
            if not churn:
                return t, s_i, xt
            gamma = jnp.where(
                (s_i >= self.s_tmin) & (s_i <= self.s_tmax),
                min(self.s_churn / n, math.sqrt(2) - 1),
                0.0,
            )
            s_hat = jnp.minimum(s_i * (1.0 + gamma), sig_top)
            t_hat = jnp.where(s_hat > s_i, time_from_log_snr(sde, -2.0 * jnp.log(s_hat)), t)
            z = jax.random.normal(k, xt.shape, xt.dtype)
            xt = xt + self.s_noise * jnp.sqrt(jnp.maximum(s_hat**2 - s_i**2, 0.0)) * z
            return t_hat, s_hat, xt

        def heun(xt, inputs):
            t, t_next, s_i, s_next, k = inputs
            t_hat, s_hat, xt = raise_level(t, s_i, xt, k)
            d0 = d(t_hat, xt)
            x_euler = xt + (s_next - s_hat) * d0
            xt = xt + (s_next - s_hat) * 0.5 * (d0 + d(t_next, x_euler))
            return hooked(t_next, xt), None

        keys = jax.random.split(key, n)
        alpha_T, _ = sde.alpha_sigma(ts[0])
        xt = x_T / alpha_T
        if n > 1:
            xt, _ = jax.lax.scan(heun, xt, (ts[:-1], ts[1:], sig[:-1], sig[1:], keys[:-1]))
        # last step: Euler to sigma~ = 0, i.e. the denoiser output
        t_hat, s_hat, xt = raise_level(ts[-1], sig[-1], xt, keys[-1])
        x = xt - s_hat * d(t_hat, xt)
        if hook is not None:
            x = apply_hook(hook, jnp.zeros_like(ts[-1]), x)
        return x, jnp.asarray(2 * n - 1, jnp.int32), diffrax.RESULTS.successful
