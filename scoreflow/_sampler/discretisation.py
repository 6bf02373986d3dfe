r"""Time discretisations: where a fixed-step sampler evaluates the model, as strategy objects.

Each maps a step count to a decreasing grid $T = t_0 > t_1 > \dots > t_N = t_{\min}$. Grids defined in
$\tilde\sigma = \sigma/\alpha = e^{-\lambda/2}$ or in the log-SNR $\lambda$ are mapped back to times through
`time_from_log_snr`, the inverse of the SDE's log-SNR (closed form for VE / EDM / linear VP, bisection otherwise).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._misc import check_real
from .._schedule import LinearSchedule
from .._sde import VESDE, VPSDE, AbstractSDE, SubVPSDE, time_from_log_snr


# The end time: a number, or a traced scalar (a sampler may derive it from the SDE inside `jit`).
EndTime = float | Float[Array, ""]
GRID = "a time grid (VPTime(), UniformTime(), KarrasTime(), LogSNRUniformTime())"


def _fraction(steps: int, dtype) -> Array:
    # u_i = i / N for i = 0..N; steps = 0 gives the single point u = 0 (used by EDMHeun with one step).
    return jnp.arange(steps + 1, dtype=dtype) / max(steps, 1)


def _pin_ends(ts: Array, sde: AbstractSDE, t0: EndTime) -> Array:
    # The ends are given exactly rather than through the inverse map (whose rounding could step outside [t0, T]).
    ts = ts.at[0].set(sde.T)
    return ts.at[-1].set(t0) if ts.shape[0] > 1 else ts


class AbstractTimeDiscretisation(eqx.Module):
    """A grid of `steps + 1` decreasing times from `sde.T` to `t0`."""

    @abc.abstractmethod
    def times(self, sde: AbstractSDE, steps: int, t0: EndTime) -> Float[Array, " n"]:
        """The grid from `T` down to `t0`, shape `(steps + 1,)`."""


def _check(steps: int, t0: EndTime, sde: AbstractSDE) -> None:
    if steps < 0:
        raise ValueError(f"`steps` must be >= 0; got steps={steps}")
    if isinstance(t0, float | int) and not 0.0 <= t0 < sde.T:  # a traced t0 is the caller's to keep in range
        raise ValueError(f"`t0` must lie in [0, T) = [0, {sde.T}); got t0={t0}")


class UniformTime(AbstractTimeDiscretisation):
    r"""Equal steps in $t$: $t_i = T + (i/N)(t_{\min} - T)$ (score-SDE, DDPM)."""

    def times(self, sde: AbstractSDE, steps: int, t0: EndTime) -> Float[Array, " n"]:
        _check(steps, t0, sde)
        u = _fraction(steps, jnp.result_type(float))
        return _pin_ends(sde.T + u * (t0 - sde.T), sde, t0)


class KarrasTime(AbstractTimeDiscretisation):
    r"""Karras et al. (2022, eq. 5) in $\tilde\sigma = \sigma/\alpha$:
    $\tilde\sigma_i = (\tilde\sigma_{\max}^{1/\rho} + \tfrac{i}{N}(\tilde\sigma_{\min}^{1/\rho} -
    \tilde\sigma_{\max}^{1/\rho}))^\rho$, mapped to times by the inverse log-SNR. Any SDE."""

    rho: float = 7.0

    def __check_init__(self):
        check_real("KarrasTime", "rho", self.rho, 0.0, low_open=True)

    def times(self, sde: AbstractSDE, steps: int, t0: EndTime) -> Float[Array, " n"]:
        _check(steps, t0, sde)
        u = _fraction(steps, jnp.result_type(float))
        # sigma~^(1/rho) = exp(-lambda / (2 rho)), computed from the log-SNR so it never overflows
        a = jnp.exp(-sde.log_snr(sde.T) / (2 * self.rho))
        b = jnp.exp(-sde.log_snr(t0) / (2 * self.rho))
        lam = -2.0 * self.rho * jnp.log(a + u * (b - a))
        return _pin_ends(time_from_log_snr(sde, lam), sde, t0)


class LogSNRUniformTime(AbstractTimeDiscretisation):
    r"""Equal steps in log-SNR $\lambda$ between $\lambda(T)$ and $\lambda(t_{\min})$ (DPM-Solver's default),
    optionally with a longer first step.

    With `first_step = r` the first step is $r$ times as long (in $\lambda$) as each of the others:
    $\lambda_0 = \lambda(T)$, $\lambda_i = \lambda(T) + (r + i - 1)\Delta$ for $i \ge 1$, with
    $\Delta = (\lambda(t_{\min}) - \lambda(T)) / (N - 1 + r)$; `first_step=1` is the uniform grid. At the
    high-noise end the denoiser is close to the data mean and nearly constant, so a long first step costs little
    and frees steps for the log-SNRs where the data's structure appears. Every step still shrinks like $1/N$,
    so samplers keep their convergence order.
    """

    first_step: float = 1.0

    def __check_init__(self):
        check_real("LogSNRUniformTime", "first_step", self.first_step, 0.0, low_open=True)

    def times(self, sde: AbstractSDE, steps: int, t0: EndTime) -> Float[Array, " n"]:
        _check(steps, t0, sde)
        dtype = jnp.result_type(float)
        lam_min, lam_max = sde.log_snr(sde.T), sde.log_snr(t0)
        if steps == 0:
            return _pin_ends(jnp.reshape(jnp.asarray(sde.T, dtype), (1,)), sde, t0)
        # positions in units of Delta: 0, r, r + 1, ..., r + N - 1 (= the whole range)
        pos = jnp.concatenate([jnp.zeros(1, dtype), self.first_step + jnp.arange(steps, dtype=dtype)])
        u = pos / (steps - 1 + self.first_step)
        lam = lam_min * (1.0 - u) + lam_max * u
        return _pin_ends(time_from_log_snr(sde, lam), sde, t0)


class VPTime(AbstractTimeDiscretisation):
    r"""The SDE-aware default grid of the fixed-step samplers: equal steps in the time of a variance-preserving
    `reference` process over the same log-SNR range, mapped to the SDE's times through the log-SNR.

    With $\lambda_{\rm ref}$ the reference's log-SNR and $\tau_a = \lambda_{\rm ref}^{-1}(\lambda(T))$,
    $\tau_b = \lambda_{\rm ref}^{-1}(\lambda(t_{\min}))$: $t_i = \lambda^{-1}(\lambda_{\rm ref}(\tau_a +
    \tfrac iN(\tau_b - \tau_a)))$. `reference=None` (the default) is exactly `UniformTime` on `VPSDE` and
    `SubVPSDE` (DDPM's grid) and on `VESDE` (score-SDE's grid, uniform in $\log\sigma$; the VP-reference spacing
    measured worse there: reverse-SDE variance ratio 0.94 instead of 1.00 on the power test's mixture), and takes
    `VPSDE(LinearSchedule())` as the reference for every other SDE: for `EDMSDE` ($t = \sigma$ over 0.002..80)
    the uniform grid in $t$ puts almost every step at high noise (the EDM rows at 100 NFE were 4-20x worse than
    the VP rows on the benchmark mixtures); through the reference they get the log-SNR spacing that VP's uniform
    grid has. Measured against `KarrasTime()` and `LogSNRUniformTime()` at 100 NFE
    (`benchmarks/bench_sampling.py`, docs/sampling.md): equal for the ODE samplers and clearly better for the
    stochastic ones (reverse diffusion, Langevin, ancestral), which need the steps at high noise.
    """

    reference: AbstractSDE | None = None

    def __check_init__(self):
        if self.reference is not None and not isinstance(self.reference, AbstractSDE):
            raise TypeError(f"VPTime needs `reference` to be an SDE or None; got reference={self.reference!r}")

    def times(self, sde: AbstractSDE, steps: int, t0: EndTime) -> Float[Array, " n"]:
        _check(steps, t0, sde)
        u = _fraction(steps, jnp.result_type(float))
        ref = self.reference
        if ref is None:
            if isinstance(sde, VPSDE | SubVPSDE | VESDE):
                return _pin_ends(sde.T + u * (t0 - sde.T), sde, t0)
            ref = VPSDE(LinearSchedule())
        tau_a = time_from_log_snr(ref, sde.log_snr(sde.T))
        tau_b = time_from_log_snr(ref, sde.log_snr(t0))
        lam = jax.vmap(ref.log_snr)(tau_a + u * (tau_b - tau_a))
        return _pin_ends(time_from_log_snr(sde, lam), sde, t0)


def levels(
    discretisation: AbstractTimeDiscretisation,
    sde: AbstractSDE,
    steps: int,
    t0: float,
    final_step_to_zero: bool,
    denoise_level: float,
) -> Float[Array, " n"]:
    """The model-call levels of a multistep solver: with the jump to zero, `steps` levels from T down to
    sigma~ = max(denoise_level / steps, sigma~(t0)); else the `steps + 1` grid points from T to t0."""
    if not final_step_to_zero:
        return discretisation.times(sde, steps, t0)
    lam_end = jnp.minimum(-2.0 * jnp.log(denoise_level / steps), sde.log_snr(t0))
    t_end = jnp.where(lam_end >= sde.log_snr(t0), t0, time_from_log_snr(sde, lam_end))
    return discretisation.times(sde, steps - 1, t_end)


def few_step_grid(steps: int) -> LogSNRUniformTime:
    r"""`UniPC`'s default grid for `steps` model calls: uniform in log-SNR with a first step
    $r = \min(\max(0.75(\texttt{steps} - 2), 3), 4.5)$ times as long as the others (3 up to 6 steps, 4.5 from 8).

    At few steps the high-noise end, where the denoiser is nearly the data mean and a first-order step is nearly
    exact, should take a fixed share of the log-SNR range (about 1/2 at 5-6 calls, 0.4 at 8-10); a fixed $r$
    gives it a share $r/(N - 2 + r)$ that shrinks with $N$. Chosen by measurement on the P2 mixtures (gmm2, gmm64;
    VP and EDM; `docs/sampling.md`): $r = 3$ was best at 5-6 calls on gmm64 and $r = 4$-$5$ at 8-10 on gmm2, with
    the same result everywhere from 15 calls. $r$ stays bounded, so every step still shrinks like $1/N$.
    """
    return LogSNRUniformTime(first_step=float(min(max(0.75 * (steps - 2), 3.0), 4.5)))
