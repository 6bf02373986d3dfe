r"""Diffusion recovery likelihood (Gao, Song, Poole, Wu & Kingma 2021): a chain of conditional EBMs
$p_\theta(x_t \mid x_{t+1})$, each trained with short-run Langevin from a concentrated (tethered) conditional.

Notation. Levels $t = 0, \dots, T-1$; the noising chain is $x_0 = a_0 x + \sigma_0\epsilon$ (a small data jitter)
and $x_{t+1} = a_{t+1} x_t + \sigma_{t+1}\epsilon$ with $\sigma^2 = 1 - a^2$. The EBM of level $t$ works on the
scaled variable $y = a_{t+1} x_t$, in which the forward kernel is the tether $N(x_{t+1}; y, \sigma_{t+1}^2 I)$:

$$p_\theta(y \mid x_{t+1}) \propto \exp\!\big(-E_\theta(y, t) - \lVert y - x_{t+1}\rVert^2 / (2\sigma_{t+1}^2)\big),
\qquad E_\theta(y, t) = g_\theta(y, t) / s_t^2,$$

where $g_\theta$ is the network and $s_t^2 = b^2\sigma_{t+1}^2\,\bar\sigma_t/\bar\sigma_0$ the Langevin step size
($\bar\sigma_t$ the cumulative noise std of $x_t$; the reference code's $c_t$). Dividing by $s_t^2$ makes one
Langevin step move $y$ by $-\nabla g/2$ whatever the level. The top level $T-1$ has no tether: it is a marginal EBM
for $x_{T-1}$ ($a' = 1$) sampled from $N(0, I)$. If $g$ is right, $-E_\theta(\cdot, t)$ is $\log p_t$ up to a
constant, so level 0 gives a density of the data once $\log Z_0$ is estimated (`recovery_log_density`, by SMC).

Loss (recovery likelihood gradient, per example at a level $t$ drawn uniformly):
$\ell = \lambda_t\,[g_\theta(y^+, t) - g_\theta(y^-, t)]$ with $y^+ = a'_{t+1} x_t$ and $y^-$ a stop-gradient short-run
Langevin sample of the conditional started at $x_{t+1}$. $\lambda_t$ is the per-level weighting (the paper's:
$\sigma_1/\sigma_{t+1}$).
"""

import abc

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from .._custom_types import Conditioning, ScalarLike
from .energy import AbstractEnergy
from .mcmc import LogNormaliserResult, langevin_chain, smc_log_normaliser


class RecoverySchedule(eqx.Module):
    r"""The noise levels: `alphas` $= (a_0, a_1, \dots, a_T)$ with $a_0$ the data jitter and $a_{t+1}$ the scaling of
    the step $x_t \to x_{t+1}$ ($\sigma_{t+1} = \sqrt{1 - a_{t+1}^2}$). $T$ = `num_levels` EBMs are trained."""

    alphas: Float[Array, " levels_plus_one"]

    def __check_init__(self):
        a = np.asarray(self.alphas)
        if a.ndim != 1 or a.shape[0] < 2:
            raise ValueError(f"`alphas` must be a vector (a_0, ..., a_T) with T >= 1; got shape {a.shape}")
        if not np.all((a > 0) & (a < 1)):
            raise ValueError(f"every alpha must lie in (0, 1); got {a}")

    @classmethod
    def paper(
        cls, num_levels: int = 6, beta_start: float = 1e-4, beta_end: float = 0.02, num_fine_steps: int = 1000
    ) -> "RecoverySchedule":
        r"""Gao et al.'s schedule: DDPM's linear $\beta$ over `num_fine_steps` steps, grouped into `num_levels`
        blocks of $\lfloor N / (2(T-1)) \rfloor$ steps, the last block running to step $N - 1$ (near pure noise).
        `num_levels=6` is the released model; 30 and more give the longer chains."""
        if not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"`num_levels` must be an int >= 2; got {num_levels!r}")
        block = num_fine_steps // (2 * (num_levels - 1))
        if block < 1:
            raise ValueError(
                f"`num_levels`={num_levels} is too many for num_fine_steps={num_fine_steps}: need "
                f"2 * (num_levels - 1) <= num_fine_steps"
            )
        betas = np.linspace(beta_start, beta_end, num_fine_steps, dtype=np.float64)
        sqrt_a = np.sqrt(1.0 - betas)
        idx = np.concatenate([np.arange(num_levels) * block, [num_fine_steps - 1]])
        a = [np.prod(sqrt_a[: idx[0] + 1])] + [np.prod(sqrt_a[idx[i - 1] + 1 : idx[i] + 1]) for i in range(1, len(idx))]
        return cls(jnp.asarray(np.asarray(a)))

    @property
    def a(self) -> Float[Array, " levels_plus_one"]:
        """`alphas` without gradient: the schedule is fixed (a trainer that updates every float leaf leaves it)."""
        return jax.lax.stop_gradient(self.alphas)

    @property
    def num_levels(self) -> int:
        return self.alphas.shape[0] - 1

    @property
    def sigmas(self) -> Float[Array, " levels_plus_one"]:
        return jnp.sqrt(1 - self.a**2)

    @property
    def alphas_cum(self) -> Float[Array, " levels_plus_one"]:
        """$\\bar a_t = \\prod_{s \\le t} a_s$: $x_t = \\bar a_t x + \\bar\\sigma_t \\epsilon$."""
        return jnp.cumprod(self.a)

    @property
    def sigmas_cum(self) -> Float[Array, " levels_plus_one"]:
        return jnp.sqrt(1 - self.alphas_cum**2)

    def scale(self, t: Int[Array, ""] | int) -> Float[Array, ""]:
        """$a'_t$: the scaling from $x_t$ to the level's variable $y$ ($a_{t+1}$, or 1 at the top level)."""
        return jnp.where(t < self.num_levels - 1, self.a[t + 1], 1.0)

    def tether(self, t: Int[Array, ""] | int) -> Float[Array, ""]:
        """1 where level t is tethered to $x_{t+1}$, 0 at the (marginal) top level."""
        return jnp.where(t < self.num_levels - 1, 1.0, 0.0)


class AbstractLevelWeighting(eqx.Module):
    """Strategy: the per-level loss weights $\\lambda_t$, t = 0..T-1."""

    @abc.abstractmethod
    def __call__(self, schedule: RecoverySchedule) -> Float[Array, " levels"]:
        """The weights of the T levels."""


class SigmaRatioWeighting(AbstractLevelWeighting):
    r"""The paper's $\lambda_t = \sigma_1 / \sigma_{t+1}$ (on the network output $g$)."""

    def __call__(self, schedule):
        s = schedule.sigmas
        return s[1] / s[1:]


class UniformLevelWeighting(AbstractLevelWeighting):
    r"""$\lambda_t = 1$."""

    def __call__(self, schedule):
        return jnp.ones(schedule.num_levels, schedule.a.dtype)


class AbstractStepSize(eqx.Module):
    """Strategy: the squared Langevin step sizes $s_t^2$ of the T levels (they also scale the energy,
    $E = g/s_t^2$)."""

    @abc.abstractmethod
    def __call__(self, schedule: RecoverySchedule) -> Float[Array, " levels"]:
        """$s_t^2$ for t = 0..T-1."""


class PaperStepSize(AbstractStepSize):
    r"""The reference code's $s_t^2 = b^2\sigma_{t+1}^2\,\bar\sigma_t/\bar\sigma_0$ with $b^2$ = `b_square` (2e-4).
    The steps are far below the tether's width at low levels: the short chains then act as a learned
    denoiser rather than as samplers of the conditional, and the level-0 energy $g/s_0^2$ is very sharp."""

    b_square: float = eqx.field(static=True, default=2e-4)

    def __check_init__(self):
        if not self.b_square > 0:
            raise ValueError(f"`b_square` must be > 0; got {self.b_square}")

    def __call__(self, schedule):
        return self.b_square * schedule.sigmas[1:] ** 2 * schedule.sigmas_cum[:-1] / schedule.sigmas_cum[0]


class RelativeStepSize(AbstractStepSize):
    r"""$s_t = b\,\sigma_{t+1}$: a fixed fraction `b` of the tether's width at every level (the top level's
    $\sigma_T \approx 1$). With $b \approx 0.3$ thirty steps relax the tethered conditional about once and ULA's
    variance bias is $\approx b^2/4$, so the negatives are near-exact samples and training is close to maximum
    likelihood."""

    b: float = eqx.field(static=True, default=0.3)

    def __check_init__(self):
        if not 0 < self.b < 1:
            raise ValueError(f"`b` must lie in (0, 1); got {self.b}")

    def __call__(self, schedule):
        return self.b**2 * schedule.sigmas[1:] ** 2


class RecoveryEBM(AbstractEnergy):
    r"""The T conditional EBMs of diffusion recovery likelihood. As an `AbstractEnergy`, `model(t, y)` is the level
    energy $E_\theta(y, t) = g_\theta(y, t)/s_t^2$ for an integer level `t` (without the tether).

    **Fields:** `network` (an `AbstractEnergy` giving $g$, called with the level as a float), `schedule`
    (`RecoverySchedule`), `step_size` (an `AbstractStepSize`: `RelativeStepSize(0.3)` by default, or the reference
    code's `PaperStepSize(2e-4)`), `num_steps` (Langevin steps per level).
    """

    network: AbstractEnergy
    schedule: RecoverySchedule
    step_size: AbstractStepSize = RelativeStepSize()
    num_steps: int = eqx.field(static=True, default=30)

    def __check_init__(self):
        if not isinstance(self.network, AbstractEnergy):
            raise TypeError(f"`network` must be an AbstractEnergy; got {type(self.network).__name__}")
        if not isinstance(self.step_size, AbstractStepSize):
            raise TypeError(f"`step_size` must be an AbstractStepSize; got {self.step_size!r}")
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"`num_steps` must be an int >= 1; got {self.num_steps!r}")

    @property
    def num_levels(self) -> int:
        return self.schedule.num_levels

    def step_sizes_squared(self) -> Float[Array, " levels"]:
        """$s_t^2$ for t = 0..T-1, from `step_size`."""
        return self.step_size(self.schedule)

    def _level(self, t):
        t = jnp.asarray(t)
        if not jnp.issubdtype(t.dtype, jnp.integer):
            raise TypeError(f"RecoveryEBM levels are integers 0..{self.num_levels - 1}; got dtype {t.dtype}")
        return eqx.error_if(t, (t < 0) | (t >= self.num_levels), f"the level `t` must lie in 0..{self.num_levels - 1}")

    def g(self, t: Int[Array, ""] | int, y: Float[Array, "*data"]) -> Float[Array, ""]:
        """The network output $g_\\theta(y, t)$."""
        t = self._level(t)
        out = self.network(t.astype(y.dtype), y)
        if jnp.shape(out) != ():
            raise ValueError(f"the network must return a scalar for one example; got shape {jnp.shape(out)}")
        return out

    def __call__(
        self,
        t: Int[ArrayLike, ""] | int,
        x: Float[Array, "*data"],
        cond: Conditioning = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, ""]:
        if cond is not None:
            raise ValueError(f"RecoveryEBM is unconditional; got cond={cond!r}")
        t = self._level(t)
        return self.g(t, x) / self.step_sizes_squared()[t].astype(x.dtype)

    def conditional_log_prob(
        self, t: Int[Array, ""] | int, y: Float[Array, "*data"], x_next: Float[Array, "*data"]
    ) -> Float[Array, ""]:
        r"""$\log p_\theta(y \mid x_{t+1}) + c = -E_\theta(y, t) - \lVert y - x_{t+1}\rVert^2/(2\sigma_{t+1}^2)$
        (no tether at the top level)."""
        sig = self.schedule.sigmas[t + 1].astype(y.dtype)
        teth = self.schedule.tether(t).astype(y.dtype)
        return -self(t, y) - teth * jnp.sum((y - x_next) ** 2) / (2 * sig**2)

    def negative(
        self,
        t: Int[Array, ""] | int,
        x_next: Float[Array, "*data"],
        *,
        key: PRNGKeyArray,
        num_steps: int | None = None,
        noise_scale: ScalarLike = 1.0,
    ) -> Float[Array, "*data"]:
        """A short-run Langevin sample $y$ of $p_\\theta(y \\mid x_{t+1})$ started at $x_{t+1}$ (one example)."""
        t = self._level(t)
        s = jnp.sqrt(self.step_sizes_squared()[t]).astype(x_next.dtype)
        return langevin_chain(
            lambda y: self.conditional_log_prob(t, y, x_next),
            x_next,
            step_size=s,
            num_steps=self.num_steps if num_steps is None else num_steps,
            key=key,
            noise_scale=noise_scale,
        )


def recovery_pair(
    schedule: RecoverySchedule, t: Int[Array, ""], x: Float[Array, "*data"], *, key: PRNGKeyArray
) -> tuple[Float[Array, "*data"], Float[Array, "*data"]]:
    """$(y^+, x_{t+1})$ for one data example `x` at level `t`: $y^+ = a'_t x_t$ and the next noisy state."""
    k1, k2 = jax.random.split(key)
    dt = x.dtype
    x_t = schedule.alphas_cum[t].astype(dt) * x + schedule.sigmas_cum[t].astype(dt) * jax.random.normal(k1, x.shape, dt)
    x_next = schedule.a[t + 1].astype(dt) * x_t + schedule.sigmas[t + 1].astype(dt) * jax.random.normal(k2, x.shape, dt)
    return schedule.scale(t).astype(dt) * x_t, x_next


class RecoveryLossInfo(eqx.Module):
    """Per-batch diagnostics: `gap` $= E[g(y^+) - g(y^-)]$ per level (NaN for a level not drawn), the count per
    level, and whether every negative sample was finite."""

    gap: Float[Array, " levels"]
    count: Float[Array, " levels"]
    finite_negatives: Array


def recovery_loss_from_samples(
    model: RecoveryEBM,
    t: Int[Array, " batch"],
    y_pos: Float[Array, "batch ..."],
    y_neg: Float[Array, "batch ..."],
    weighting: AbstractLevelWeighting = SigmaRatioWeighting(),
) -> tuple[Float[Array, ""], Float[Array, " batch"]]:
    r"""$\frac1B\sum_i \lambda_{t_i}[g(y^+_i, t_i) - g(y^-_i, t_i)]$ and the per-example gaps $g^+ - g^-$; `y_neg` is
    taken without gradient."""
    y_neg = jax.lax.stop_gradient(y_neg)
    g_pos = jax.vmap(model.g)(t, y_pos)
    g_neg = jax.vmap(model.g)(t, y_neg)
    gap = g_pos - g_neg
    lam = weighting(model.schedule).astype(gap.dtype)[t]
    return jnp.mean(lam * gap), gap


def recovery_loss(
    model: RecoveryEBM,
    x: Float[Array, "batch ..."],
    *,
    key: PRNGKeyArray,
    weighting: AbstractLevelWeighting = SigmaRatioWeighting(),
) -> tuple[Float[Array, ""], RecoveryLossInfo]:
    """The recovery-likelihood loss of a batch of data `x` (levels uniform, negatives by short-run Langevin)."""
    b = x.shape[0]
    k_t, k_pair, k_neg = jax.random.split(key, 3)
    t = jax.random.randint(k_t, (b,), 0, model.num_levels)
    y_pos, x_next = jax.vmap(lambda tt, xx, kk: recovery_pair(model.schedule, tt, xx, key=kk))(
        t, x, jax.random.split(k_pair, b)
    )
    y_neg = jax.vmap(lambda tt, xn, kk: model.negative(tt, xn, key=kk))(t, x_next, jax.random.split(k_neg, b))
    loss, gap = recovery_loss_from_samples(model, t, y_pos, y_neg, weighting)
    onehot = jax.nn.one_hot(t, model.num_levels, dtype=gap.dtype)
    count = jnp.sum(onehot, axis=0)
    gap_per_level = jnp.sum(onehot * jax.lax.stop_gradient(gap)[:, None], axis=0) / count
    finite = jnp.all(jnp.isfinite(y_neg))
    return loss, RecoveryLossInfo(gap_per_level, count, finite)


def recovery_optimiser(
    learning_rate: float = 1e-4,
    *,
    warmup_steps: int = 1000,
    clip_norm: float = 1.0,
    beta1: float = 0.5,
    max_consecutive_nonfinite: int = 100,
) -> optax.GradientTransformation:
    r"""The stable default: Adam ($\beta_1$ = `beta1`) behind global-norm clipping, a linear warm-up over
    `warmup_steps`, wrapped in `optax.apply_if_finite` so a non-finite gradient skips the update (and training stops
    being skipped silently only after `max_consecutive_nonfinite` in a row: then updates go through and the NaN
    shows)."""
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0; got {learning_rate}")
    if not clip_norm > 0:
        raise ValueError(f"`clip_norm` must be > 0; got {clip_norm}")
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"`warmup_steps` must be an int >= 0; got {warmup_steps!r}")
    lr = optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps > 0 else learning_rate
    inner = optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(lr, b1=beta1, b2=0.999))
    return optax.apply_if_finite(inner, max_consecutive_nonfinite)


def recovery_update(
    model: RecoveryEBM,
    opt_state: PyTree,
    optimiser: optax.GradientTransformation,
    x: Float[Array, "batch ..."],
    *,
    key: PRNGKeyArray,
    weighting: AbstractLevelWeighting = SigmaRatioWeighting(),
) -> tuple[RecoveryEBM, PyTree, Float[Array, ""], RecoveryLossInfo]:
    """One training step (jit it with `eqx.filter_jit`): loss, gradient, optimiser update of the network's arrays.
    Returns `(model, opt_state, loss, info)`."""

    def loss_fn(net):
        m = eqx.tree_at(lambda mm: mm.network, model, net)
        return recovery_loss(m, x, key=key, weighting=weighting)

    params, static = eqx.partition(model.network, eqx.is_inexact_array)
    (loss, info), grads = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static)), has_aux=True)(params)
    updates, opt_state = optimiser.update(grads, opt_state, params)
    net = eqx.combine(optax.apply_updates(params, updates), static)
    return eqx.tree_at(lambda mm: mm.network, model, net), opt_state, loss, info


def init_recovery_optimiser(model: RecoveryEBM, optimiser: optax.GradientTransformation) -> PyTree:
    """The optimiser state for `model`'s network arrays."""
    return optimiser.init(eqx.filter(model.network, eqx.is_inexact_array))


def recovery_sample(
    model: RecoveryEBM,
    shape: tuple[int, ...],
    *,
    key: PRNGKeyArray,
    num_steps: int | None = None,
    noise_scale: ScalarLike = 1.0,
    dtype=None,
) -> tuple[Float[Array, "*data"], Float[Array, "levels ..."]]:
    r"""Progressive sampling of **one** example from noise: $x_{T-1}$ by Langevin on the top (marginal) EBM from
    $N(0, I)$, then $x_t$ given $x_{t+1}$ down to $x_0$. Returns $x_0$ and all levels $(x_0, \dots, x_{T-1})$.
    `vmap` over keys for a batch."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    k0, k = jax.random.split(key)
    x_top = jax.random.normal(k0, shape, dtype)
    sc = model.schedule

    def body(x_next, inp):
        t, kk = inp
        y = model.negative(t, x_next, key=kk, num_steps=num_steps, noise_scale=noise_scale)
        x_t = y / sc.scale(t).astype(dtype)
        return x_t, x_t

    levels = jnp.arange(model.num_levels - 1, -1, -1)
    x0, traj = jax.lax.scan(body, x_top, (levels, jax.random.split(k, model.num_levels)))
    return x0, traj[::-1]


def recovery_log_density(
    model: RecoveryEBM,
    x: Float[Array, "batch ..."],
    *,
    key: PRNGKeyArray,
    base_mean: Float[Array, "*data"],
    base_std: Float[Array, "*data"] | float,
    **smc_options,
) -> tuple[Float[Array, " batch"], LogNormaliserResult]:
    r"""The normalised level-0 log-density $\log p_\theta(x) = -E_\theta(a'_0 x, 0) - \log Z_0$ with
    $Z_0 = \int \exp(-E_\theta(a'_0 x, 0))\,dx$ by tempered SMC from the Gaussian base (`smc_log_normaliser`;
    `smc_options` go to it). Returns the per-example log-densities and the `LogNormaliserResult` whose `stderr`
    is the standard error shared by all of them. This is the model's density of $x_0$, the jittered data."""
    a = model.schedule.scale(0).astype(x.dtype)
    unnorm = lambda v: -model(0, a * v)
    res = smc_log_normaliser(unnorm, base_mean=base_mean, base_std=base_std, key=key, **smc_options)
    return jax.vmap(unnorm)(x) - res.log_z, res


class StagedLogNormaliserResult(eqx.Module):
    r"""$\log Z_0$ of a `RecoveryEBM`'s level-0 energy by SMC through the recovery stages (`recovery_log_normaliser`):
    `log_z` $= \log\frac1R\sum_r\hat Z_r$ over `num_repeats` independent runs, `stderr` its delta-method standard
    error (NaN for R = 1), the per-run estimates `log_z_runs`; per run and stage (stage 0 the Gaussian base to level
    $T-1$, stage $k$ level $T-k$ to level $T-k-1$): the stage's log-increment `stage_log_z`, its number of tempering
    steps, its mean MALA acceptance and its final MALA step size $s$; the first run's final (weighted) particles."""

    log_z: Float[Array, ""]
    stderr: Float[Array, ""]
    log_z_runs: Float[Array, " repeats"]
    stage_log_z: Float[Array, "repeats stages"]
    num_tempering_steps: Int[Array, "repeats stages"]
    acceptance: Float[Array, "repeats stages"]
    step_size: Float[Array, "repeats stages"]
    particles: Float[Array, "particles ..."]
    weights: Float[Array, " particles"]


def recovery_log_normaliser(
    model: RecoveryEBM,
    shape: tuple[int, ...],
    *,
    key: PRNGKeyArray,
    num_particles: int = 500,
    num_mcmc_steps: int = 10,
    target_ess: float = 0.5,
    num_repeats: int = 8,
    target_acceptance: float = 0.6,
    max_tempering_steps: int = 200,
    dtype=None,
) -> StagedLogNormaliserResult:
    r"""$\log Z_0 = \log\int\exp(-E_\theta(a'_0 x, 0))\,dx$ by sequential Monte Carlo **through the recovery stages**:
    the particles start from $N(0, I)$ and follow the model's own marginals
    $\gamma_t(x) = \exp(-E_\theta(a'_t x, t))$ of $x_t$, $t = T-1, \dots, 0$ (noise to data, the path diffusion
    recovery likelihood was trained on), each stage $\gamma_{t+1} \to \gamma_t$ by adaptive tempering
    $\gamma_{t+1}^{1-\beta}\gamma_t^\beta$ (`blackjax.adaptive_tempered_smc`, `target_ess`), `blackjax.mala` moves
    whose step $s$ starts at the level's Langevin step $s_t / a'_t$ and is tuned after each tempering step towards
    `target_acceptance` ($\log s$ += mean acceptance - target, clipped to $\pm 1$; adapting to the current
    particles keeps the estimate consistent). The stages' normalising-constant ratios multiply (their $Z_t$ cancel), so
    $\hat Z_0$ is unbiased; weighted particles pass from stage to stage. `num_repeats` independent runs give the
    standard error. This suits images, where a single tempering from a Gaussian to the data density is a long way.

    Args:
        model: the `RecoveryEBM`.
        shape: the shape of one example.
        key: PRNG key.
        num_particles, num_mcmc_steps, target_ess: per run; MALA moves per tempering step; the fraction of the
            effective sample size kept per tempering step.
        num_repeats: independent runs (vmapped).
        target_acceptance: the MALA acceptance the step size is tuned towards.
        max_tempering_steps: per stage; a stage that has not reached $\beta = 1$ by then makes its run NaN.
        dtype: of the particles (default, and at least: the default float).

    Returns a `StagedLogNormaliserResult`.
    """
    for name, v, lo in (
        ("num_particles", num_particles, 2),
        ("num_mcmc_steps", num_mcmc_steps, 1),
        ("num_repeats", num_repeats, 1),
        ("max_tempering_steps", max_tempering_steps, 1),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"`{name}` must be an int >= {lo}; got {v!r}")
    if not 0.0 < target_ess < 1.0:
        raise ValueError(f"`target_ess` must be in (0, 1); got {target_ess}")
    if not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"`target_acceptance` must be in (0, 1); got {target_acceptance}")
    if not isinstance(model, RecoveryEBM):
        raise TypeError(f"`model` must be a RecoveryEBM; got {type(model).__name__}")
    # at least the default float: blackjax draws its proposal noise in it (see `smc_log_normaliser`)
    dtype = jnp.result_type(float) if dtype is None else jnp.promote_types(dtype, jnp.result_type(float))
    shape = tuple(shape)
    size = int(np.prod(shape))
    top = model.num_levels - 1
    sc = model.schedule
    s_level = jnp.sqrt(model.step_sizes_squared()) / jnp.asarray([sc.scale(t) for t in range(model.num_levels)])

    def level_lp(t, v):
        t = jnp.minimum(t, top)  # t = T is the base; its energy branch is computed and discarded
        return -model(t, sc.scale(t).astype(dtype) * v.reshape(shape))

    def log_base(v):
        return -0.5 * jnp.sum(v**2) - 0.5 * size * jnp.log(2 * jnp.pi).astype(dtype)

    def log_gamma(t, v):
        return jnp.where(t > top, log_base(v), level_lp(t, v))

    def stage(carry, inp):
        """One stage: weighted particles of gamma_{t+1} (the base for t = T-1) to gamma_t."""
        particles, weights = carry
        t, key = inp
        log_prior = lambda v: log_gamma(t + 1, v)
        smc = blackjax.adaptive_tempered_smc.build_kernel(
            log_prior,
            lambda v: level_lp(t, v) - log_prior(v),
            blackjax.mala.build_kernel(),
            blackjax.mala.init,
            blackjax.smc.resampling.systematic,
            target_ess,
        )

        def cond(c):
            state, _, n, _, _, _ = c
            return (state.tempering_param < 1) & (n < max_tempering_steps)

        def body(c):
            state, log_z, n, s, acc_sum, k = c
            k, sub = jax.random.split(k)
            state, info = smc(sub, state, num_mcmc_steps, {"step_size": (0.5 * s**2)[None]})
            acc = jnp.mean(info.update_info.acceptance_rate).astype(dtype)
            # MALA's h = s^2 / 2; log s moves by (acceptance - target) after each tempering step.
            s = s * jnp.exp(jnp.clip(acc - target_acceptance, -1.0, 1.0))
            return state, log_z + info.log_likelihood_increment, n + 1, s, acc_sum + acc, k

        state = blackjax.smc.tempered.TemperedSMCState(particles, weights, jnp.zeros((), dtype))
        zero = jnp.zeros((), dtype)
        init = (state, zero, jnp.zeros((), jnp.int32), s_level[t].astype(dtype), zero, key)
        state, log_z, n, s, acc_sum, _ = jax.lax.while_loop(cond, body, init)
        log_z = jnp.where(state.tempering_param >= 1, log_z, jnp.nan)
        return (state.particles, state.weights), (log_z, n, acc_sum / jnp.maximum(n, 1), s)

    def one_run(key):
        k_init, k_stages = jax.random.split(key)
        x = jax.random.normal(k_init, (num_particles, size), dtype)
        w = jnp.full((num_particles,), 1.0 / num_particles, dtype)
        levels = jnp.arange(top, -1, -1)
        (x, w), diag = jax.lax.scan(stage, (x, w), (levels, jax.random.split(k_stages, top + 1)))
        return x, w, *diag

    x, w, stage_log_z, n, acc, s = jax.vmap(one_run)(jax.random.split(key, num_repeats))
    log_z_runs = jnp.sum(stage_log_z, axis=1)
    m = jnp.max(log_z_runs)
    r = jnp.exp(log_z_runs - m)
    log_z = m + jnp.log(jnp.mean(r))
    if num_repeats > 1:
        stderr = jnp.std(r, ddof=1) / (jnp.sqrt(num_repeats) * jnp.mean(r))
    else:
        stderr = jnp.full((), jnp.nan, dtype)
    return StagedLogNormaliserResult(
        log_z, stderr, log_z_runs, stage_log_z, n, acc, s, x[0].reshape(num_particles, *shape), w[0]
    )
