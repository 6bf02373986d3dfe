import abc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Scalar
from .._misc import check_instance, check_int, check_real
from .._sde import AbstractSDE
from ._steps import ddim_step
from .base import AbstractSampler, Hook, ScoreFn, apply_hook
from .discretisation import GRID, AbstractTimeDiscretisation, VPTime


class AbstractPredictor(eqx.Module):
    """One reverse step from `t` to `s < t` with one model evaluation."""

    @abc.abstractmethod
    def step(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        t: Scalar,
        s: Scalar,
        x: Float[Array, "*data"],
        key: PRNGKeyArray,
    ) -> Float[Array, "*data"]:
        """The state at `s`."""


class EulerMaruyama(AbstractPredictor):
    r"""Euler-Maruyama on the reverse SDE: $x_s = x_t + [f x_t - g^2 \nabla\log p_t](s - t) + g\sqrt{t-s}\,z$,
    coefficients at $t$ (Song et al., 2021)."""

    def step(self, score, sde, t, s, x, key):
        drift = sde.reverse_drift(t, x, score(t, x))
        noise = jax.random.normal(key, x.shape, x.dtype)
        return x + drift * (s - t) + sde.diffusion(t) * jnp.sqrt(t - s) * noise


class ReverseDiffusion(AbstractPredictor):
    r"""Score-SDE's reverse-diffusion predictor, with its discrete coefficients taken from $\alpha$, $\sigma$ at
    the grid points. For the exact forward kernel $x_t = a x_s + b z$ ($a = \alpha_t/\alpha_s$,
    $b^2 = \sigma_t^2(1 - e^{\lambda_t - \lambda_s})$, never negative), the step is
    $x_s = (x_t + b^2\nabla\log p_t(x_t))/a + (b/a) z$: Tweedie's posterior mean $E[x_s | x_t]$ plus the kernel's
    noise, i.e. score-SDE's VE reverse-diffusion step applied to $x/\alpha$. Valid for any step size."""

    def step(self, score, sde, t, s, x, key):
        alpha_t, sigma_t = sde.alpha_sigma(t)
        alpha_s, _ = sde.alpha_sigma(s)
        a = alpha_t / alpha_s
        b2 = sigma_t**2 * -jnp.expm1(sde.log_snr(t) - sde.log_snr(s))
        noise = jax.random.normal(key, x.shape, x.dtype)
        return (x + b2 * score(t, x)) / a + jnp.sqrt(b2) / a * noise


class Ancestral(AbstractPredictor):
    r"""Ancestral sampling (Ho et al., 2020): draw $x_s \sim q(x_s | x_t, \hat x_0)$ with $\hat x_0$ from the
    score; the posterior mean and variance $\sigma_s^2(1 - e^{\lambda_t - \lambda_s})$ come from $\alpha$,
    $\sigma$ at the grid points, so the step is valid at any size (it is DDIM with $\eta = 1$)."""

    def step(self, score, sde, t, s, x, key):
        return ddim_step(score, sde, t, s, x, 1.0, key)


class AbstractCorrector(eqx.Module):
    """MCMC steps at a fixed time `t` that leave $p_t$ invariant; `n_steps` model evaluations per time."""

    n_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def step(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        t: Scalar,
        x: Float[Array, "*data"],
        key: PRNGKeyArray,
    ) -> Float[Array, "*data"]:
        """One corrector step at `t`."""


class NoCorrector(AbstractCorrector):
    """No correction (zero model evaluations)."""

    n_steps: int = eqx.field(default=0, static=True, init=False)

    def step(self, score, sde, t, x, key):
        return x


class Langevin(AbstractCorrector):
    r"""Unadjusted Langevin steps $x \leftarrow x + \epsilon s + \sqrt{2\epsilon}\,z$ at $p_t$ (Song et al., 2021).

    Step size, per example and independent of the state: $\epsilon = 2\,\mathrm{snr}^2\sigma_t^2$, i.e.
    score-SDE's $2\,\mathrm{snr}^2\|z\|^2/\|s\|^2$ with both norms replaced by their expectations bounds:
    $E\|z\|^2 = d$ and the Fisher information $E\|\nabla\log p_t\|^2 \le d/\sigma_t^2$ of a
    Gaussian-smoothed density. Score-SDE averages the norms over the batch, which couples the examples; one
    example's own norms blow up where $s \approx 0$ (near modes), and any state-dependent step without the
    $\nabla\epsilon$ drift term changes the invariant law to $\propto p_t/\epsilon$ (measured in the tests: a
    clipped own-norm rule inflates the variance of $N(0, 0.86)$ to 1.12 in 50 steps). As
    $-\nabla^2\log p_t \preceq I/\sigma_t^2$, this step stays well inside the stability limit $2\sigma_t^2$
    for snr < 1.
    """

    snr: float = 0.16
    n_steps: int = eqx.field(default=1, static=True)

    def __check_init__(self):
        check_real("Langevin", "snr", self.snr, 0.0, low_open=True)
        check_int("Langevin", "n_steps", self.n_steps, 1, hint=" (NoCorrector() for none)")

    def step_size(self, sigma: Scalar) -> Scalar:
        r"""$\epsilon = 2\,\mathrm{snr}^2\sigma^2$ for the marginal noise level `sigma`."""
        return 2.0 * self.snr**2 * sigma**2

    def step(self, score, sde, t, x, key):
        _, sigma = sde.alpha_sigma(t)
        eps = self.step_size(sigma)
        return (
            x + eps * score(t, x) + jnp.sqrt(2.0 * eps) * jax.random.normal(key, x.shape, x.dtype)
        )


class PredictorCorrector(AbstractSampler):
    r"""Predictor-corrector sampling (Song et al., 2021, Alg. 1): at each grid time $t_i$, `corrector.n_steps`
    corrector steps, then one predictor step to $t_{i+1}$; the hook runs after every one of them.
    NFE = `steps * (1 + corrector.n_steps)`. Finite for any `steps >= 1`."""

    predictor: AbstractPredictor = ReverseDiffusion()
    corrector: AbstractCorrector = Langevin()
    steps: int = eqx.field(default=100, static=True)
    discretisation: AbstractTimeDiscretisation = VPTime()

    def __check_init__(self):
        check_int("PredictorCorrector", "steps", self.steps, 1)
        predictors = "a predictor (ReverseDiffusion(), EulerMaruyama(), Ancestral())"
        check_instance("PredictorCorrector", "predictor", self.predictor, AbstractPredictor, predictors)
        correctors = "a corrector (Langevin(), NoCorrector())"
        check_instance("PredictorCorrector", "corrector", self.corrector, AbstractCorrector, correctors)
        check_instance("PredictorCorrector", "discretisation", self.discretisation, AbstractTimeDiscretisation, GRID)

    def sample_one(
        self,
        score: ScoreFn,
        sde: AbstractSDE,
        x_T: Float[Array, "*data"],
        t0: float,
        key: PRNGKeyArray,
        hook: Hook | None,
    ) -> tuple[Float[Array, "*data"], Int[Array, ""], diffrax.RESULTS]:
        ts = self.discretisation.times(sde, self.steps, t0)
        n_corr = self.corrector.n_steps

        def body(x, inputs):
            t, s, k = inputs
            k_pred, *k_corr = jax.random.split(k, 1 + n_corr)
            for kc in k_corr:
                x = apply_hook(hook, t, self.corrector.step(score, sde, t, x, kc))
            x = apply_hook(hook, s, self.predictor.step(score, sde, t, s, x, k_pred))
            return x, None

        keys = jax.random.split(key, self.steps)
        x, _ = jax.lax.scan(body, x_T, (ts[:-1], ts[1:], keys))
        nfe = jnp.asarray(self.steps * (1 + n_corr), jnp.int32)
        return x, nfe, diffrax.RESULTS.successful
