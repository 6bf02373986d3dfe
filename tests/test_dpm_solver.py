"""DPMSolverPP: the final step to sigma = 0 (default), its convergence order and NFE accounting.

References are closed form: for a single Gaussian N(m, s^2 I) the probability-flow ODE maps x_T to
x(0) = m + s / sqrt(s^2 + sigma~_T^2) (x_T / alpha_T - m) exactly (sigma~ = sigma / alpha), so no tight
numerical reference is needed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf


VP = sf.VPSDE(sf.LinearSchedule())
EDM = sf.EDMSDE(sigma_min=0.002, sigma_max=80.0)
SDES = {"vp": VP, "edm": EDM}
MEAN = jnp.array([1.0, -0.5])
VAR = 0.3
GAUSS = sf.GaussianMixture(jnp.array([1.0]), MEAN[None], VAR * jnp.eye(2)[None])
KEY = jax.random.key(0)
BATCH = 16


def _exact(sde):
    """The exact ODE end points x(0) of the BATCH examples `sf.sample` draws with KEY."""
    keys = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(BATCH))
    x_T = jax.vmap(lambda k: sde.prior_std() * jax.random.normal(jax.random.split(k)[0], (2,)))(keys)
    alpha, sigma = sde.alpha_sigma(sde.T)
    scale = jnp.sqrt(VAR / (VAR + (sigma / alpha) ** 2))
    return MEAN[None] + scale * (x_T / alpha - MEAN[None])


def _error(sde, sampler):
    out = sf.sample(sf.AnalyticScore(GAUSS, sde), sde, KEY, (BATCH, 2), sampler)
    return float(jnp.max(jnp.abs(out.samples - _exact(sde)))), out


ORDER_STEPS = (24, 48, 96)


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("order", (2, 3))
def test_final_step_to_zero_convergence_order(sde_name, order):
    """Error of x(0) against the exact map, log-log slope over 24 / 48 / 96 steps. The jump to zero is a
    second-order step, so the observed order is min(order, 2) (measured 1.79 for 2M, 2.02 for 3M on VP)."""
    sde = SDES[sde_name]
    errs = [_error(sde, sf.DPMSolverPP(steps=n, order=order))[0] for n in ORDER_STEPS]
    slope = -np.polyfit(np.log(ORDER_STEPS), np.log(errs), 1)[0]
    assert abs(slope - min(order, 2)) < 0.35, (errs, slope)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_single_gaussian_accuracy(sde_name):
    """3M with the final extrapolated step: close to the exact sample map of a Gaussian at 20 NFE."""
    sde = SDES[sde_name]
    err, out = _error(sde, sf.DPMSolverPP(steps=20))
    assert err < 1e-2, err
    assert bool(jnp.all(out.nfe == 20))


@pytest.mark.parametrize("steps", (1, 2, 7))
@pytest.mark.parametrize(
    "sampler_kw",
    (
        {},
        {"order": 2, "lower_order_final": True},
        {"final_step_to_zero": False, "lower_order_final": True},
    ),
)
def test_nfe_and_few_steps(steps, sampler_kw):
    """NFE = steps exactly (counted by a host callback on one example), and 1 / 2-step runs are finite."""
    calls = []
    model = sf.AnalyticScore(GAUSS, VP)

    def counted(t, x, cond=None):
        jax.debug.callback(lambda: calls.append(1))
        return model(t, x, cond)

    out = sf.sample(counted, VP, KEY, (1, 2), sf.DPMSolverPP(steps=steps, **sampler_kw))
    jax.effects_barrier()
    assert len(calls) == steps and int(out.nfe[0]) == steps
    assert bool(jnp.all(jnp.isfinite(out.samples)))
    # even one step (a pure denoise from the prior) lands within a few data stds of the mean
    assert float(jnp.max(jnp.abs(out.samples - MEAN[None]))) < 5.0


@pytest.mark.parametrize("lower_order_final", (False, True))
def test_jump_to_zero_from_the_last_two_states(lower_order_final):
    """The jump to sigma = 0 returns the extrapolation linear in sigma~^2 through the data predictions at the last
    two states, x(0) = d_b + (d_b - d_a) sigma~_b^2 / (sigma~_a^2 - sigma~_b^2) (or d_b with `lower_order_final`),
    recomputed here from the states the hook sees (one example, 6 steps, EDM: sigma~ = t). The order tests alone
    do not see a wrong step length in the extrapolation (the error stays O(sigma~_b^2))."""
    model, n = sf.AnalyticScore(GAUSS, EDM), 6
    seen = []

    def hook(t, x):
        jax.debug.callback(lambda t, x: seen.append((float(t), np.asarray(x))), t, x, ordered=True)
        return x

    smp = sf.DPMSolverPP(steps=n, order=2, lower_order_final=lower_order_final)
    out = sf.sample(model, EDM, KEY, (1, 2), smp, hook=hook).samples[0]
    jax.effects_barrier()
    (t_a, x_a), (t_b, x_b), (t_end, _) = seen[-3], seen[-2], seen[-1]
    assert t_end == 0.0 and t_a > t_b > 0.0
    d_a, d_b = model.denoise(t_a, jnp.asarray(x_a)), model.denoise(t_b, jnp.asarray(x_b))
    expect = d_b if lower_order_final else d_b + (d_b - d_a) * t_b**2 / (t_a**2 - t_b**2)
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-10)


def test_one_step_is_denoise():
    """With one step and the jump to zero the sample is the data prediction at T."""
    model = sf.AnalyticScore(GAUSS, EDM)
    out = sf.sample(model, EDM, KEY, (4, 2), sf.DPMSolverPP(steps=1))
    keys = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(4))
    x_T = jax.vmap(lambda k: EDM.prior_std() * jax.random.normal(jax.random.split(k)[0], (2,)))(keys)
    expect = jax.vmap(lambda x: model.denoise(EDM.T, x))(x_T)
    np.testing.assert_allclose(out.samples, expect, rtol=0, atol=1e-12)


def test_given_starting_states():
    """`x_T=` replaces the prior draws: the same states as `sf.sample` draws give the same samples; other states
    are mapped by the (nearly) exact ODE map; a wrong shape is refused with the shapes named."""
    sde, sampler = VP, sf.DPMSolverPP(steps=20)
    keys = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(BATCH))
    x_T = jax.vmap(lambda k: sde.prior_std() * jax.random.normal(jax.random.split(k)[0], (2,)))(keys)
    model = sf.AnalyticScore(GAUSS, sde)
    drawn = sf.sample(model, sde, KEY, (BATCH, 2), sampler).samples
    given = sf.sample(model, sde, KEY, (BATCH, 2), sampler, x_T=x_T).samples
    np.testing.assert_array_equal(given, drawn)
    alpha, sigma = sde.alpha_sigma(sde.T)
    scale = jnp.sqrt(VAR / (VAR + (sigma / alpha) ** 2))
    other = x_T[::-1] + 0.5  # other states than the keys would draw
    out = sf.sample(model, sde, jax.random.key(5), (BATCH, 2), sampler, x_T=other).samples
    np.testing.assert_allclose(out, MEAN[None] + scale * (other / alpha - MEAN[None]), atol=1e-2)
    with pytest.raises(ValueError, match=r"x_T.*\(16, 2\).*\(16, 3\)"):
        sf.sample(model, sde, KEY, (BATCH, 2), sampler, x_T=jnp.zeros((BATCH, 3)))


def test_reported_end_time():
    """SampleResult.t0 is the time the samples are at: 0 after a jump to sigma = 0, else the grid's end."""
    model = sf.AnalyticScore(GAUSS, VP)
    run = lambda sampler: sf.sample(model, VP, KEY, (2, 2), sampler, t0=1e-3).t0
    assert run(sf.DPMSolverPP(steps=2)) == 0.0
    assert run(sf.EDMHeun(steps=2)) == 0.0
    assert run(sf.DPMSolverPP(steps=2, final_step_to_zero=False)) == 1e-3
    assert run(sf.DDIM(steps=2)) == 1e-3


def test_invalid_arguments():
    with pytest.raises(ValueError, match="order"):
        sf.DPMSolverPP(order=4)
    with pytest.raises(ValueError, match="denoise_level"):
        sf.DPMSolverPP(denoise_level=0.0)
    with pytest.raises(ValueError, match="steps"):
        sf.DPMSolverPP(steps=0)
