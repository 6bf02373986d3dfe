r"""MCMC on unnormalised log-densities: short-run unadjusted Langevin (a `lax.scan`) and typed wrappers over
`blackjax` (MALA, HMC) where exactness matters.

Every kernel acts on **one** chain whose state is an array of any shape; `vmap` over chains. `log_prob` is a
function `x -> log p(x) + const` (for an energy, `lambda x: -energy(x)`); it may close over parameters.
"""

import abc
from collections.abc import Callable

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._custom_types import ScalarLike


LogProb = Callable[[Array], Array]


class MCMCResult(eqx.Module):
    """The final state of one chain and its mean acceptance rate (1 for unadjusted kernels)."""

    position: Float[Array, "*data"]
    acceptance_rate: Float[Array, ""]


def _check_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"`num_steps` must be an int >= 1; got {num_steps!r}")


def _check_float(x: Array, name: str) -> None:
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"`{name}` must be a floating array; got dtype {jnp.result_type(x)}")


def langevin_chain(
    log_prob: LogProb,
    x0: Float[Array, "*data"],
    *,
    step_size: ScalarLike,
    num_steps: int,
    key: PRNGKeyArray,
    noise_scale: ScalarLike = 1.0,
) -> Float[Array, "*data"]:
    r"""Short-run unadjusted Langevin dynamics as one `lax.scan`:
    $x \leftarrow x + \tfrac{s^2}{2}\nabla_x \log p(x) + \lambda s\,\epsilon$, $\epsilon \sim N(0, I)$.

    Args:
        log_prob: unnormalised log-density of one example.
        x0: the starting point.
        step_size: $s$ (the noise std per step; the drift step is $s^2/2$). A traced scalar is allowed (per-level
            step sizes, Gao et al. 2021).
        num_steps: number of steps (static).
        key: PRNG key.
        noise_scale: $\lambda$; 1 samples $p$ (up to discretisation bias), < 1 is the reference code's
            test-time "cooling".

    Returns the final state. Biased for finite $s$ (no Metropolis correction): use `MALA`/`HMC` where exactness
    matters.
    """
    _check_steps(num_steps)
    _check_float(x0, "x0")
    s = jnp.asarray(step_size, x0.dtype)
    lam = jnp.asarray(noise_scale, x0.dtype)
    grad = jax.grad(lambda x: jnp.sum(log_prob(x)))

    def body(x, k):
        eps = jax.random.normal(k, x.shape, x.dtype)
        return x + 0.5 * s**2 * grad(x) + lam * s * eps, None

    x, _ = jax.lax.scan(body, x0, jax.random.split(key, num_steps))
    return x


class AbstractMCMCKernel(eqx.Module):
    """A Markov kernel leaving (approximately) `log_prob` invariant, run for `num_steps` from `x0` by `run`."""

    @abc.abstractmethod
    def run(self, log_prob: LogProb, x0: Float[Array, "*data"], *, num_steps: int, key: PRNGKeyArray) -> MCMCResult:
        """Runs one chain and returns its final state."""

    @abc.abstractmethod
    def blackjax_kernel(self) -> tuple[Callable, Callable, dict]:
        """`(step_fn, init_fn, parameters)` in blackjax's form, for use inside `blackjax` SMC."""


class UnadjustedLangevin(AbstractMCMCKernel):
    r"""Unadjusted Langevin with step size $s$ (`langevin_chain`). Fast, biased by $O(s^2)$."""

    step_size: float | Float[Array, ""]
    noise_scale: float = 1.0

    def run(self, log_prob, x0, *, num_steps, key):
        x = langevin_chain(
            log_prob, x0, step_size=self.step_size, num_steps=num_steps, key=key, noise_scale=self.noise_scale
        )
        return MCMCResult(x, jnp.ones((), x.dtype))

    def blackjax_kernel(self):
        raise TypeError(
            "UnadjustedLangevin is not an exact kernel and cannot move SMC particles; use MALA(...) or HMC(...)"
        )


def _run_blackjax(step_fn, init_fn, params, log_prob, x0, num_steps, key):
    _check_steps(num_steps)
    _check_float(x0, "x0")
    lp = lambda x: jnp.sum(log_prob(x))
    state = init_fn(x0, lp)

    def body(state, k):
        state, info = step_fn(k, state, lp, **params)
        return state, info.acceptance_rate

    state, acc = jax.lax.scan(body, state, jax.random.split(key, num_steps))
    return MCMCResult(state.position, jnp.mean(acc).astype(x0.dtype))


class MALA(AbstractMCMCKernel):
    r"""Metropolis-adjusted Langevin (`blackjax.mala`) with the proposal of `langevin_chain`,
    $x' = x + \tfrac{s^2}{2}\nabla\log p(x) + s\epsilon$, then a Metropolis-Hastings accept/reject, so the chain
    leaves $p$ exactly invariant. `step_size` is $s$ (blackjax's $h = s^2/2$), the same convention as
    `UnadjustedLangevin`, so the two can be compared at equal steps."""

    step_size: float | Float[Array, ""]

    def __check_init__(self):
        if isinstance(self.step_size, (int, float)) and not self.step_size > 0:
            raise ValueError(f"`step_size` must be > 0; got {self.step_size}")

    def blackjax_kernel(self):
        return blackjax.mala.build_kernel(), blackjax.mala.init, {"step_size": 0.5 * jnp.square(self.step_size)}

    def run(self, log_prob, x0, *, num_steps, key):
        step_fn, init_fn, params = self.blackjax_kernel()
        return _run_blackjax(step_fn, init_fn, params, log_prob, x0, num_steps, key)


class HMC(AbstractMCMCKernel):
    """Hamiltonian Monte Carlo (`blackjax.hmc`) with a leapfrog `step_size`, `num_integration_steps` and a diagonal
    `inverse_mass_matrix` (default identity, flattened over the example's elements)."""

    step_size: float | Float[Array, ""]
    num_integration_steps: int = eqx.field(static=True, default=10)
    inverse_mass_matrix: Float[Array, " n"] | None = None

    def __check_init__(self):
        if isinstance(self.step_size, (int, float)) and not self.step_size > 0:
            raise ValueError(f"`step_size` must be > 0; got {self.step_size}")
        if self.num_integration_steps < 1:
            raise ValueError(f"`num_integration_steps` must be >= 1; got {self.num_integration_steps}")

    def _params(self, x0):
        imm = self.inverse_mass_matrix
        if imm is None:
            imm = jnp.ones(x0.size, x0.dtype)
        elif imm.shape != (x0.size,):
            raise ValueError(f"`inverse_mass_matrix` must have shape ({x0.size},); got {imm.shape}")
        return {
            "step_size": self.step_size,
            "inverse_mass_matrix": imm,
            "num_integration_steps": self.num_integration_steps,
        }

    def blackjax_kernel(self):
        # The mass matrix needs the example's size; SMC supplies it through `smc_log_normaliser`.
        return blackjax.hmc.build_kernel(), blackjax.hmc.init, {"step_size": self.step_size}

    def run(self, log_prob, x0, *, num_steps, key):
        # blackjax's HMC works on flat vectors; flatten the example and restore its shape afterwards.
        shape = x0.shape
        flat_lp = lambda v: log_prob(v.reshape(shape))
        res = _run_blackjax(
            blackjax.hmc.build_kernel(), blackjax.hmc.init, self._params(x0), flat_lp, x0.reshape(-1), num_steps, key
        )
        return MCMCResult(res.position.reshape(shape), res.acceptance_rate)


def mcmc(
    kernel: AbstractMCMCKernel, log_prob: LogProb, x0: Float[Array, "*data"], *, num_steps: int, key: PRNGKeyArray
) -> MCMCResult:
    """Runs `kernel` for `num_steps` from `x0` on `log_prob` (one chain; `vmap` over chains)."""
    if not isinstance(kernel, AbstractMCMCKernel):
        raise TypeError(f"`kernel` must be an AbstractMCMCKernel (UnadjustedLangevin, MALA, HMC); got {kernel!r}")
    return kernel.run(log_prob, x0, num_steps=num_steps, key=key)


class LogNormaliserResult(eqx.Module):
    r"""$\log Z$ estimated by tempered SMC: `log_z` $= \log \frac1R\sum_r \hat Z_r$ over `num_repeats` independent
    runs, `stderr` its delta-method standard error $\operatorname{sd}(\hat Z_r)/(\sqrt R\,\bar Z)$ (NaN for R = 1),
    the per-run estimates `log_z_runs`, the final `particles` of the first run (equally weighted after a last
    resampling is not done: use `weights`), and the number of tempering steps per run."""

    log_z: Float[Array, ""]
    stderr: Float[Array, ""]
    log_z_runs: Float[Array, " repeats"]
    particles: Float[Array, "particles ..."]
    weights: Float[Array, " particles"]
    num_tempering_steps: Array


def smc_log_normaliser(
    log_prob: LogProb,
    *,
    base_mean: Float[ArrayLike, "*data"],
    base_std: Float[ArrayLike, "*data"] | float,
    key: PRNGKeyArray,
    kernel: AbstractMCMCKernel | None = None,
    num_particles: int = 1000,
    num_mcmc_steps: int = 10,
    target_ess: float = 0.5,
    num_repeats: int = 8,
    max_tempering_steps: int = 500,
) -> LogNormaliserResult:
    r"""$\log Z = \log\int \exp(\log p(x))\,dx$ by adaptive tempered SMC (`blackjax.adaptive_tempered_smc`) on the
    path $\pi_\beta(x) \propto q(x)^{1-\beta} \tilde p(x)^\beta$, $\beta: 0 \to 1$, from the Gaussian base
    $q = N(\text{base\_mean}, \text{diag}(\text{base\_std}^2))$ (Del Moral et al. 2006; Neal's AIS with resampling).

    Args:
        log_prob: unnormalised log-density of one example (e.g. `-energy`).
        base_mean: mean of the Gaussian base, of the example's shape.
        base_std: its standard deviation (that shape, or a scalar). Choose the base to cover the target (wider is
            safer).
        key: PRNG key.
        kernel: the move kernel, `MALA(step_size)` (default: step 0.3 * min(base_std)) or `HMC(...)`.
        num_particles: SMC particles per run.
        num_mcmc_steps: kernel moves per tempering step.
        target_ess: fraction of the effective sample size kept per tempering step (sets the next temperature).
        num_repeats: independent runs (vmapped) giving the standard error.
        max_tempering_steps: a run that has not reached $\beta = 1$ by then is reported as NaN (loud failure).

    Returns a `LogNormaliserResult`.
    """
    for name, v, lo in (
        ("num_particles", num_particles, 2),
        ("num_mcmc_steps", num_mcmc_steps, 1),
        ("num_repeats", num_repeats, 1),
        ("max_tempering_steps", max_tempering_steps, 1),
    ):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"`{name}` must be an int >= {lo}; got {v!r}")
    if not 0.0 < target_ess < 1.0:
        raise ValueError(f"`target_ess` must be in (0, 1); got {target_ess}")
    mean = jnp.asarray(base_mean)
    _check_float(mean, "base_mean")
    # Particles in at least the default float dtype: blackjax draws MALA/HMC noise in it, so float32 particles
    # under x64 would meet float64 proposals (a dtype mismatch inside its accept/reject).
    mean = mean.astype(jnp.promote_types(mean.dtype, jnp.result_type(float)))
    std = jnp.broadcast_to(jnp.asarray(base_std, mean.dtype), mean.shape)
    shape = mean.shape
    if kernel is None:
        kernel = MALA(0.3 * jnp.min(std))
    if not isinstance(kernel, (MALA, HMC)):
        raise TypeError(f"`kernel` must be MALA(...) or HMC(...) (an exact kernel); got {kernel!r}")

    # Particles are flat vectors, so HMC's diagonal mass matrix and MALA see the same state.
    def flat_lp(v):
        return jnp.sum(log_prob(v.reshape(shape)))

    def log_base(v):
        z = (v - mean.reshape(-1)) / std.reshape(-1)
        return -0.5 * jnp.sum(z**2) - jnp.sum(jnp.log(std)) - 0.5 * v.size * jnp.log(2 * jnp.pi)

    def log_ratio(v):
        return flat_lp(v) - log_base(v)

    step_fn, init_fn, params = kernel.blackjax_kernel()
    if isinstance(kernel, HMC):
        params = kernel._params(mean.reshape(-1))
        params = {k: jnp.asarray(v)[None] for k, v in params.items() if k != "num_integration_steps"}
        step_fn = jax.tree_util.Partial(step_fn, num_integration_steps=kernel.num_integration_steps)
    else:
        params = {k: jnp.asarray(v, mean.dtype)[None] for k, v in params.items()}
    smc = blackjax.adaptive_tempered_smc(
        log_base,
        log_ratio,
        step_fn,
        init_fn,
        params,
        blackjax.smc.resampling.systematic,
        target_ess,
        num_mcmc_steps=num_mcmc_steps,
    )

    def one_run(k):
        k_init, k_loop = jax.random.split(k)
        z = jax.random.normal(k_init, (num_particles, mean.size), mean.dtype)
        state = smc.init(mean.reshape(1, -1) + std.reshape(1, -1) * z)

        def cond(carry):
            state, _, n, _ = carry
            return (state.tempering_param < 1) & (n < max_tempering_steps)

        def body(carry):
            state, log_z, n, k = carry
            k, sub = jax.random.split(k)
            state, info = smc.step(sub, state)
            return state, log_z + info.log_likelihood_increment, n + 1, k

        init = (state, jnp.zeros((), mean.dtype), jnp.zeros((), jnp.int32), k_loop)
        state, log_z, n, _ = jax.lax.while_loop(cond, body, init)
        log_z = jnp.where(state.tempering_param >= 1, log_z, jnp.nan)
        return log_z, state.particles, state.weights, n

    log_z_runs, particles, weights, n = jax.vmap(one_run)(jax.random.split(key, num_repeats))
    m = jnp.max(log_z_runs)
    r = jnp.exp(log_z_runs - m)
    log_z = m + jnp.log(jnp.mean(r))
    if num_repeats > 1:
        stderr = jnp.std(r, ddof=1) / (jnp.sqrt(num_repeats) * jnp.mean(r))
    else:
        stderr = jnp.full((), jnp.nan, mean.dtype)
    return LogNormaliserResult(log_z, stderr, log_z_runs, particles[0].reshape(num_particles, *shape), weights[0], n)
