r"""UniPC (Zhao et al., 2023): the unified predictor UniP-p and corrector UniC-p, multistep, data prediction in the
half log-SNR $l = \tfrac12\log\mathrm{SNR} = \log(\alpha/\sigma)$.

Notation (one step from level $s$ to $t$, $h = l_t - l_s > 0$): $m_0 = \hat x_0(s, x_s)$ is the data prediction
at $s$, $m_k$ those at the $k$-th earlier levels $s_k$, $r_k = (l_{s_k} - l_s)/h < 0$ and
$D_k = (m_k - m_0)/r_k$. Every update has the form
$$x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t(1 - e^{-h})\,m_0 - \alpha_t\,B(-h)\sum_k a_k D_k,$$
with $B$ the variant (`Bh1`: $B(z) = z$, `Bh2`: $B(z) = e^z - 1$, evaluated at $z = -h$ in this data-prediction
form, so $-\alpha_t B(-h) > 0$) and the weights $a$ solving the order conditions
$\sum_k a_k r_k^{i-1} = i!\,(-h)\varphi_{i+1}(-h)/B(-h)$, $i = 1..p$, with
$\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z$, $\varphi_1(z) = (e^z - 1)/z$ (Zhao et al., 2023, Alg. 1 and 2).
"""

import abc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Scalar
from .._misc import check_bool, check_instance, check_int, check_real
from .._sde import AbstractSDE
from .base import AbstractSampler, Hook, ScoreFn, apply_hook
from .discretisation import GRID, AbstractTimeDiscretisation, few_step_grid, levels


class AbstractUniBh(eqx.Module):
    r"""The $B(h)$ of UniPC: any $B(h) = h + O(h^2)$ keeps the order (Zhao et al., 2023, sec. 3.2)."""

    @abc.abstractmethod
    def __call__(self, hh: Scalar) -> Scalar:
        r"""$B$ at $hh = -h$ (the data-prediction form)."""


class Bh1(AbstractUniBh):
    r"""$B_1(h) = h$: the paper's choice for unconditional sampling at very few steps."""

    def __call__(self, hh: Scalar) -> Scalar:
        return hh


class Bh2(AbstractUniBh):
    r"""$B_2(h) = e^h - 1$: the paper's (and diffusers') default, better for guided sampling. With it UniP-2
    equals DPM-Solver++ 2M."""

    def __call__(self, hh: Scalar) -> Scalar:
        return jnp.expm1(hh)


def _hphi(hh: Scalar, k: int) -> Scalar:
    r"""$k!\,z\,\varphi_{k+1}(z)$ at $z = hh$, by its Taylor series for $|z| < 1$ (the recursion
    $\varphi_{k+1} = (\varphi_k - 1/k!)/z$ cancels catastrophically for small steps) and the recursion above."""
    fact = 1.0
    for j in range(1, k + 1):
        fact *= j
    small = jnp.abs(hh) < 1.0
    z = jnp.where(small, 1.0, hh)
    phi = jnp.expm1(z) / z  # phi_1
    f = 1.0
    for j in range(1, k + 1):
        phi = (phi - 1.0 / f) / z
        f *= j + 1
    # series: phi_{k+1}(z) = sum_j z^j / (j + k + 1)!
    zs = jnp.where(small, hh, 0.0)
    term = jnp.ones_like(zs)
    f = 1.0
    for j in range(1, k + 2):
        f *= j
    term = term / f  # 1/(k+1)!
    series = term
    for j in range(1, 16):
        term = term * zs / (j + k + 1)
        series = series + term
    return fact * hh * jnp.where(small, series, phi)


def _solve2(a11, a12, a21, a22, b1, b2):
    det = a11 * a22 - a12 * a21
    return (b1 * a22 - a12 * b2) / det, (a11 * b2 - b1 * a21) / det


def _solve3(m, b):
    """Cramer's rule for a 3x3 system (no LAPACK call in the traced sampler)."""

    def det3(a):
        return (
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        )

    d = det3(m)
    out = []
    for c in range(3):
        mc = [[b[r] if j == c else m[r][j] for j in range(3)] for r in range(3)]
        out.append(det3(mc) / d)
    return out


def predictor_weights(order: Int[Array, ""], r1: Scalar, r2: Scalar, b: list) -> tuple[Scalar, Scalar]:
    """UniP-p weights on (D_1, D_2) for the traced order p in {1, 2, 3}: 0 for p = 1, the fixed 1/2 of the
    paper's and diffusers' UniP-2, the 2x2 order conditions for p = 3."""
    ok3 = order >= 3
    s1 = jnp.where(ok3, r1, 1.0)
    s2 = jnp.where(ok3, r2, 2.0)
    w1, w2 = _solve2(1.0, 1.0, s1, s2, b[0], b[1])
    w1 = jnp.where(ok3, w1, jnp.where(order == 2, 0.5, 0.0))
    w2 = jnp.where(ok3, w2, 0.0)
    return w1, w2


def corrector_weights(order: Int[Array, ""], r1: Scalar, r2: Scalar, b: list) -> tuple[Scalar, Scalar, Scalar]:
    """UniC-p weights on (D_1, D_2, D_t) for the traced order p in {1, 2, 3} (the new point has r = 1):
    1/2 for p = 1 (the paper's choice), else the p x p order conditions."""
    ok2 = order == 2
    ok3 = order >= 3
    s1 = jnp.where(ok2, r1, -1.0)  # placeholders keep the unused systems regular
    c1, ct2 = _solve2(1.0, 1.0, s1, 1.0, b[0], b[1])
    s1, s2 = jnp.where(ok3, r1, -1.0), jnp.where(ok3, r2, -2.0)
    c = _solve3([[1.0, 1.0, 1.0], [s1, s2, 1.0], [s1**2, s2**2, 1.0]], b)
    w1 = jnp.where(ok3, c[0], jnp.where(ok2, c1, 0.0))
    w2 = jnp.where(ok3, c[1], 0.0)
    wt = jnp.where(ok3, c[2], jnp.where(ok2, ct2, 0.5))
    return w1, w2, wt


class UniPC(AbstractSampler):
    r"""UniPC multistep sampler (Zhao et al., 2023): UniP-`order` predictor and UniC-`order` corrector, data
    prediction in the half log-SNR, one model call per step.

    Each step $s \to t$ predicts $x_t$ with UniP-p from the data predictions at the last $p$ levels, evaluates
    the model once at the predicted $x_t$, and (with `corrector=True`) re-does the step with UniC-p, which also
    uses that new prediction: the corrected $x_t$ has order $p + 1$ and costs no model call, since the
    prediction at $x_t$ is the next step's $m_0$ (see the module docstring for the weights). The first steps
    use the orders their history allows; `B(h)` is `bh` (`Bh1()` or `Bh2()`). The last step has no corrector
    (there is no model call after it). Orders: UniP-p is order p; with the corrector the global order is $p + 1$
    after the warm-up steps, which run at lower order and cap the observed order at 3 for `order=3`.

    The levels and the final step are those of `DPMSolverPP`: with `final_step_to_zero=True` (the default) the
    `steps` model calls are made at levels from $T$ down to
    $\tilde\sigma_{\rm end} = \max(\texttt{denoise\_level}/\texttt{steps}, \tilde\sigma(t_0))$ and the last
    step jumps to $\sigma = 0$ by extrapolating the last two data predictions linearly in $\tilde\sigma^2$
    (second order, no extra call); else the grid runs from $T$ to `t0`. NFE = `steps`. Any linear SDE.

    With `lower_order_final=True` the last step is first order: the jump to zero returns the plain denoise
    $\hat x_0$ at the last level (diffusers' `final_sigmas_type="zero"`), and without the jump the last step into
    `t0` is UniP-1 (DDIM).

    **The default few-step sampler** (`order=2, bh=Bh2()`, i.e. DPM-Solver++ 2M + UniC-2, jump to zero with
    `denoise_level=0.7`; `discretisation=None` means `few_step_grid(steps)`: uniform in log-SNR with a first
    step 3x the others up to 6 calls and 4.5x from 8). Chosen by the paired sliced-W2 excess over the exact ODE on
    the P2 mixtures (gmm2 and gmm64, VP and EDM, 5-10 NFE, 4 seeds of 10,000 samples): orders 2 / 3 x B1 / B2, the
    grid (Karras rho 7 and the time-uniform `VPTime` were 3-20x worse at every budget; the first-step factor
    3-6), the denoise level (0.5-1.0) and `lower_order_final` (docs/sampling.md has the tables). At 8 NFE it
    reaches sliced W2 0.043 / 0.041 on gmm2 (VP / EDM) against 0.050 / 0.045 with the 3x first step and 0.048 /
    0.045 for the default `DPMSolverPP` (3M), and 0.034 / 0.040 on gmm64 (`benchmarks/results/sampling_few.md`).
    """

    steps: int = eqx.field(default=10, static=True)
    order: int = eqx.field(default=2, static=True)
    bh: AbstractUniBh = Bh2()
    corrector: bool = eqx.field(default=True, static=True)
    discretisation: AbstractTimeDiscretisation | None = None
    final_step_to_zero: bool = eqx.field(default=True, static=True)
    lower_order_final: bool = eqx.field(default=False, static=True)
    denoise_level: float = 0.7

    def __check_init__(self):
        check_int("UniPC", "steps", self.steps, 1)
        check_int("UniPC", "order", self.order, 1, 3)
        check_instance("UniPC", "bh", self.bh, AbstractUniBh, "a B(h) variant (Bh1() or Bh2())")
        check_bool("UniPC", "corrector", self.corrector)
        if self.discretisation is not None:
            check_instance("UniPC", "discretisation", self.discretisation, AbstractTimeDiscretisation, GRID)
        check_bool("UniPC", "final_step_to_zero", self.final_step_to_zero)
        check_bool("UniPC", "lower_order_final", self.lower_order_final)
        check_real("UniPC", "denoise_level", self.denoise_level, 0.0, low_open=True)

    @property
    def grid(self) -> AbstractTimeDiscretisation:
        """The grid used: `discretisation`, or by default `few_step_grid(steps)`."""
        return few_step_grid(self.steps) if self.discretisation is None else self.discretisation

    def end_time(self, t0: float) -> float:
        return 0.0 if self.final_step_to_zero else t0

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
        n = self.steps
        ts = levels(self.grid, sde, n, t0, self.final_step_to_zero, self.denoise_level)
        regular = n - 1 if self.final_step_to_zero else n
        lam = 0.5 * jax.vmap(sde.log_snr)(ts)  # half log-SNR l at every level

        def x0_hat(t, x):
            alpha, sigma = sde.alpha_sigma(t)
            return (x + sigma**2 * score(t, x)) / alpha

        def update(x_s, s_i, t_i, m0, diffs, weights):
            # x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) m0 - alpha_t B(-h) sum_k a_k D_k, hh = -h
            _, sigma_s = sde.alpha_sigma(ts[s_i])
            alpha_t, sigma_t = sde.alpha_sigma(ts[t_i])
            hh = lam[s_i] - lam[t_i]  # -h
            res = sum(w * dk for w, dk in zip(weights, diffs, strict=True))
            return (sigma_t / sigma_s) * x_s - alpha_t * jnp.expm1(hh) * m0 - alpha_t * self.bh(hh) * res

        def coeffs(s_i, t_i):
            hh = lam[s_i] - lam[t_i]
            big = self.bh(hh)
            return [_hphi(hh, k) / big for k in (1, 2, 3)]

        def ratio(k_i, s_i, t_i, valid, placeholder):
            # r_k = (l_{s_k} - l_s) / h; a placeholder where the history is missing (its weight is then 0)
            return jnp.where(valid, (lam[k_i] - lam[s_i]) / (lam[t_i] - lam[s_i]), placeholder)

        def body(carry, i):
            # carry: x_base (corrected state at level i - 1), x (predicted state at level i), the data
            # predictions m1, m2, m3 at levels i - 1, i - 2, i - 3, and the order of the last predictor step
            x_base, x, m1, m2, m3, p_last = carry
            m_new = x0_hat(ts[i], x)
            if self.corrector:
                # UniC at level i for the step (i - 1) -> i, of the order that step's predictor had; at i = 0
                # there is no step to correct (a valid dummy step 0 -> 1 is computed and discarded)
                s_i, t_i = jnp.maximum(i - 1, 0), jnp.maximum(i, 1)
                r1 = ratio(jnp.maximum(i - 2, 0), s_i, t_i, i >= 2, -1.0)
                r2 = ratio(jnp.maximum(i - 3, 0), s_i, t_i, i >= 3, -2.0)
                w = corrector_weights(p_last, r1, r2, coeffs(s_i, t_i))
                xc = update(x_base, s_i, t_i, m1, ((m2 - m1) / r1, (m3 - m1) / r2, m_new - m1), w)
                x = jnp.where(i >= 1, apply_hook(hook, ts[i], xc), x)
            # UniP from level i to i + 1
            p = jnp.minimum(i + 1, self.order).astype(jnp.int32)
            if self.lower_order_final and not self.final_step_to_zero:
                p = jnp.where(i == regular - 1, 1, p).astype(jnp.int32)  # UniP-1 (DDIM) into t0
            r1 = ratio(jnp.maximum(i - 1, 0), i, i + 1, i >= 1, -1.0)
            r2 = ratio(jnp.maximum(i - 2, 0), i, i + 1, i >= 2, -2.0)
            w = predictor_weights(p, r1, r2, coeffs(i, i + 1))
            x_next = update(x, i, i + 1, m_new, ((m1 - m_new) / r1, (m2 - m_new) / r2), w)
            x_next = apply_hook(hook, ts[i + 1], x_next)
            return (x, x_next, m_new, m1, m2, p), None

        zeros = jnp.zeros_like(x_T)
        init = (x_T, x_T, zeros, zeros, zeros, jnp.asarray(1, jnp.int32))
        (x_base, x, m1, m2, m3, p_last), _ = jax.lax.scan(body, init, jnp.arange(regular, dtype=jnp.int32))
        if self.final_step_to_zero:
            last = n - 1
            d0 = x0_hat(ts[last], x)
            if n >= 2 and not self.lower_order_final:
                # the jump to sigma~ = 0, extrapolating linearly in sigma~^2 (see DPMSolverPP); the corrector
                # at the last level would not change it, since x drops out of a step to sigma = 0
                d0 = d0 + (d0 - m1) / jnp.expm1(2.0 * (lam[last] - lam[last - 1]))
            x = apply_hook(hook, jnp.zeros((), ts.dtype), d0)
        return x, jnp.asarray(n, jnp.int32), diffrax.RESULTS.successful
