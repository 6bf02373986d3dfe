"""UniPC: convergence order of UniP / UniP + UniC by log-log slope, the identities with DPM-Solver++ and DDIM,
the jump to sigma = 0, NFE accounting.

References are closed form: for a single Gaussian N(m, s^2 I) the probability-flow ODE maps x_T to
x(t) = alpha(t) (m + sqrt((s^2 + sigma~(t)^2) / (s^2 + sigma~_T^2)) (x_T / alpha_T - m)) exactly (sigma~ = sigma /
alpha), so no numerical reference is needed. The agreement with diffusers' `UniPCMultistepScheduler` is checked
in `benchmarks/check_unipc_diffusers.py` (diffusers is not a test dependency).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf


VP = sf.VPSDE(sf.LinearSchedule())
EDM = sf.EDMSDE(sigma_min=0.002, sigma_max=80.0)
SDES = {"vp": VP, "edm": EDM}
T0 = {"vp": 0.05, "edm": 0.5}  # end times of the to-t0 runs: away from sigma = 0, where the order is clean
MEAN = jnp.array([1.0, -0.5])
VAR = 0.3
GAUSS = sf.GaussianMixture(jnp.array([1.0]), MEAN[None], VAR * jnp.eye(2)[None])
KEY = jax.random.key(0)
BATCH = 8


def _x_T(sde):
    keys = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(BATCH))
    return jax.vmap(lambda k: sde.prior_std() * jax.random.normal(jax.random.split(k)[0], (2,)))(keys)


def _exact(sde, t0):
    """The exact ODE end points x(t0) (x(0) for t0 = None) of the BATCH examples `sf.sample` draws with KEY."""
    alpha_T, sigma_T = sde.alpha_sigma(sde.T)
    a0, s0 = (1.0, 0.0) if t0 is None else sde.alpha_sigma(jnp.asarray(t0))
    scale = jnp.sqrt((VAR + (s0 / a0) ** 2) / (VAR + (sigma_T / alpha_T) ** 2))
    return a0 * (MEAN[None] + scale * (_x_T(sde) / alpha_T - MEAN[None]))


def _error(sde_name, sampler):
    sde = SDES[sde_name]
    t0 = None if sampler.final_step_to_zero else T0[sde_name]
    out = sf.sample(sf.AnalyticScore(GAUSS, sde), sde, KEY, (BATCH, 2), sampler, t0=t0)
    return float(jnp.max(jnp.abs(out.samples - _exact(sde, t0))))


STEPS = (16, 32, 64)


def _slope(sde_name, **kw):
    kw = dict(final_step_to_zero=False, discretisation=sf.LogSNRUniformTime()) | kw
    errs = [_error(sde_name, sf.UniPC(steps=n, **kw)) for n in STEPS]
    return -np.polyfit(np.log(STEPS), np.log(errs), 1)[0], errs


# (sde, order, bh, corrector) -> expected global order: UniP-p alone has order p, UniC raises it to p + 1; for
# order 3 the warm-up steps (orders 1 and 2, corrected to 2 and 3) cap the observed order at 3.
ORDER_CASES = [
    ("vp", 1, sf.Bh1(), False, 1.0),
    ("vp", 1, sf.Bh2(), True, 2.0),
    ("vp", 2, sf.Bh1(), False, 2.0),
    ("vp", 2, sf.Bh1(), True, 3.0),
    ("edm", 2, sf.Bh2(), True, 3.0),
    ("vp", 3, sf.Bh2(), False, 3.0),
    ("vp", 3, sf.Bh1(), True, 3.0),
]


@pytest.mark.parametrize("sde_name,order,bh,corrector,expected", ORDER_CASES)
def test_convergence_order(sde_name, order, bh, corrector, expected):
    """Max error of x(t0) against the exact map, log-log slope over 16 / 32 / 64 steps, in [p - 0.35, p + 0.65]: a
    predictor of one order lower (or a corrector that does nothing) moves the slope down by 1. The upper margin
    is wider for order 3, whose runs are still pre-asymptotic at these step counts (measured 3.42 for UniP-3 and
    4.54 for UniPC-3, whose first-order warm-up step caps the asymptotic order at 3)."""
    slope, errs = _slope(sde_name, order=order, bh=bh, corrector=corrector)
    assert expected - 0.35 < slope < expected + (2.0 if order == 3 else 0.65), (errs, slope)


def test_lower_order_final_to_t0_is_second_order():
    """`lower_order_final=True` without the jump makes the last step UniP-1 (DDIM): its O(h^2) local error caps
    UniPC-2's global order 3 at 2 (slope within 0.35 of 2, and at least 0.5 below the same run without it)."""
    slope, errs = _slope("vp", order=2, lower_order_final=True)
    full, _ = _slope("vp", order=2)
    assert abs(slope - 2.0) < 0.35 and full - slope > 0.5, (errs, slope, full)


@pytest.mark.parametrize("lower_order_final", (False, True))
def test_jump_to_zero_from_the_last_level(lower_order_final):
    """The jump to sigma = 0 uses the last two data predictions only: with `lower_order_final` it returns the plain
    denoise at the last level's state, else the linear extrapolation in sigma~^2 through the last two levels'
    predictions (recomputed here from the states the hook sees, one example, 6 steps, EDM)."""
    model, sde, n = sf.AnalyticScore(GAUSS, EDM), EDM, 6
    seen = []

    def hook(t, x):
        jax.debug.callback(lambda t, x: seen.append((float(t), np.asarray(x))), t, x, ordered=True)
        return x

    smp = sf.UniPC(steps=n, lower_order_final=lower_order_final)
    out = sf.sample(model, sde, KEY, (1, 2), smp, hook=hook).samples[0]
    jax.effects_barrier()
    # hook calls: ..., prediction at level N-2, its correction, prediction at level N-1, the jump (t = 0); the
    # data predictions of the jump are those at the predicted states (the model is called there)
    (t_a, x_a), (t_b, x_b), (t_end, _) = seen[-4], seen[-2], seen[-1]
    assert t_end == 0.0 and t_a > t_b > 0.0
    d_b = model.denoise(t_b, jnp.asarray(x_b))
    d_a = model.denoise(t_a, jnp.asarray(x_a))
    ts = jnp.asarray([t_a, t_b])  # EDM: sigma~ = t
    expect = d_b if lower_order_final else d_b + (d_b - d_a) * ts[-1] ** 2 / (ts[-2] ** 2 - ts[-1] ** 2)
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-10)


def test_default_grid_depends_on_the_budget():
    """`discretisation=None` is `few_step_grid(steps)`: first step 3x the others up to 6 calls, 4.5x from 8; an
    explicit grid is used as given."""
    assert [sf.UniPC(steps=n).grid.first_step for n in (2, 5, 6, 7, 8, 20)] == [3.0, 3.0, 3.0, 3.75, 4.5, 4.5]
    grid = sf.KarrasTime()
    assert sf.UniPC(steps=8, discretisation=grid).grid is grid


def test_unip2_bh2_is_dpm_solver_pp_2m_and_unip1_is_ddim():
    """Identities of the paper: UniP-2 with B(h) = e^h - 1 (no corrector) is DPM-Solver++ 2M, and UniP-1 is the
    first-order exponential integrator, DDIM (eta = 0), on the same grid."""
    model = sf.AnalyticScore(GAUSS, VP)
    grid = sf.LogSNRUniformTime()
    run = lambda smp: sf.sample(model, VP, KEY, (BATCH, 2), smp, t0=0.01).samples
    uni2 = run(sf.UniPC(steps=7, order=2, bh=sf.Bh2(), corrector=False, final_step_to_zero=False, discretisation=grid))
    dpm2 = run(sf.DPMSolverPP(steps=7, order=2, final_step_to_zero=False, discretisation=grid))
    np.testing.assert_allclose(uni2, dpm2, rtol=0, atol=1e-12)
    uni1 = run(sf.UniPC(steps=7, order=1, corrector=False, final_step_to_zero=False, discretisation=grid))
    ddim = run(sf.DDIM(steps=7, discretisation=grid))
    np.testing.assert_allclose(uni1, ddim, rtol=0, atol=1e-12)
    # and the corrector changes the answer (the identities are not vacuous)
    uni2c = run(sf.UniPC(steps=7, order=2, bh=sf.Bh2(), final_step_to_zero=False, discretisation=grid))
    assert float(jnp.max(jnp.abs(uni2c - dpm2))) > 1e-4


@pytest.mark.parametrize("sde_name", list(SDES))
def test_default_few_steps_accuracy(sde_name):
    """The default (UniPC-2 B2, jump to zero, `few_step_grid`) at 8 NFE maps the prior draws to within 0.05 of the
    exact Gaussian ODE map (data scale ~1; measured 0.039 / 0.033 on VP / EDM over 64 examples). On this single
    Gaussian the predictor alone (DPM-Solver++ 2M) is closer at 8 NFE (0.013 / 0.008): a step-resolution effect
    across the Gaussian's transition, traced level by level in docs/sampling.md; the corrector pays off at higher
    step counts (the order tests) and on the benchmark mixtures."""
    err = _error(sde_name, sf.UniPC(steps=8))
    assert err < 0.05, err


@pytest.mark.parametrize("steps", (1, 2, 5))
def test_nfe_and_few_steps(steps):
    """NFE = steps exactly (a host callback counts the model calls of one example); 1 and 2 steps are finite."""
    calls = []
    model = sf.AnalyticScore(GAUSS, VP)

    def counted(t, x, cond=None):
        jax.debug.callback(lambda: calls.append(1))
        return model(t, x, cond)

    out = sf.sample(counted, VP, KEY, (1, 2), sf.UniPC(steps=steps, order=3))
    jax.effects_barrier()
    assert len(calls) == steps and int(out.nfe[0]) == steps and out.t0 == 0.0
    assert bool(jnp.all(jnp.isfinite(out.samples)))
    assert float(jnp.max(jnp.abs(out.samples - MEAN[None]))) < 5.0


def test_hook_sees_every_state():
    """The hook runs after every predictor and corrector update and after the jump: zeroing coordinate 1 in it
    leaves coordinate 1 of the samples exactly 0."""
    model = sf.AnalyticScore(GAUSS, VP)
    hook = lambda t, x: x.at[1].set(0.0)
    out = sf.sample(model, VP, KEY, (4, 2), sf.UniPC(steps=6), hook=hook).samples
    np.testing.assert_array_equal(np.asarray(out[:, 1]), 0.0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="order"):
        sf.UniPC(order=4)
    with pytest.raises(ValueError, match="steps"):
        sf.UniPC(steps=0)
    with pytest.raises(TypeError, match=r"bh"):
        sf.UniPC(bh="bh1")
    with pytest.raises(ValueError, match="denoise_level"):
        sf.UniPC(denoise_level=-1.0)
    with pytest.raises(TypeError, match="discretisation"):
        sf.UniPC(discretisation="karras")


def test_fixed_step_default_grid_is_sde_aware():
    """The default grid of the fixed-step samplers (VPTime) makes the same call about as good on EDM as on VP:
    DDIM(steps=32) to t0 = 0.002-equivalent, max error of the exact Gaussian map. With UniformTime in t = sigma
    the EDM error is many times larger (the grid this default replaced)."""
    vp_t0, edm_t0 = 1e-3, 0.05
    run = lambda name, t0, smp: float(
        jnp.max(
            jnp.abs(
                sf.sample(sf.AnalyticScore(GAUSS, SDES[name]), SDES[name], KEY, (BATCH, 2), smp, t0=t0).samples
                - _exact(SDES[name], t0)
            )
        )
    )
    vp = run("vp", vp_t0, sf.DDIM(steps=32))
    edm = run("edm", edm_t0, sf.DDIM(steps=32))
    edm_uniform = run("edm", edm_t0, sf.DDIM(steps=32, discretisation=sf.UniformTime()))
    assert edm < 3 * vp, (vp, edm)
    assert edm_uniform > 5 * edm, (edm, edm_uniform)
