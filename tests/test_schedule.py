import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf

from .helpers import schedules


@pytest.mark.parametrize("schedule", schedules(), ids=lambda s: type(s).__name__)
def test_vp_identities_and_monotone(schedule):
    t = jnp.linspace(0.0, 1.0, 201)
    g = jax.vmap(schedule.gamma)(t)
    a, s = jax.vmap(schedule.alpha_sigma)(t)
    np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(jnp.log(a**2 / s**2), -g, rtol=1e-10, atol=1e-10)
    assert jnp.all(jnp.diff(g) > 0)
    # dgamma (jvp) against central finite differences
    tt = jnp.linspace(0.05, 0.95, 19)
    h = 1e-6
    fd = (jax.vmap(schedule.gamma)(tt + h) - jax.vmap(schedule.gamma)(tt - h)) / (2 * h)
    np.testing.assert_allclose(jax.vmap(schedule.dgamma)(tt), fd, rtol=1e-6)


def test_linear_schedule_matches_closed_form():
    s = sf.LinearSchedule(beta_min=0.1, beta_max=20.0)
    t = jnp.array([1e-7, 1e-5, 1e-3, 0.1, 0.5, 1.0])
    big_b = 0.1 * t + 0.5 * 19.9 * t**2
    a, sig = jax.vmap(s.alpha_sigma)(t)
    np.testing.assert_allclose(a**2, jnp.exp(-big_b), rtol=1e-12)
    np.testing.assert_allclose(sig**2, -jnp.expm1(-big_b), rtol=1e-7)  # floor 1e-16 is 1e-8 relative at t=1e-7
    # beta(t) = sigma^2 gamma' exactly, including t = 0 where gamma is floored
    sde = sf.VPSDE(s)
    tt = jnp.array([0.0, 1e-7, 0.3, 1.0])
    np.testing.assert_allclose(jax.vmap(sde.beta)(tt), 0.1 + 19.9 * tt, rtol=1e-9)


def test_cosine_and_fixed_endpoints():
    c = sf.CosineSchedule(gamma_min=-12.0, gamma_max=9.0)
    np.testing.assert_allclose([c.gamma(0.0), c.gamma(1.0)], [-12.0, 9.0], atol=1e-9)
    f = sf.FixedLinearSchedule(gamma_min=-13.3, gamma_max=5.0)
    assert f.gamma(0.0) == -13.3 and f.gamma(1.0) == 5.0


@pytest.mark.parametrize("learn_endpoints", [True, False])
def test_learned_schedule_monotone_and_endpoints_for_any_parameters(learn_endpoints, getkey):
    sched = sf.LearnedSchedule(gamma_min=-10.0, gamma_max=7.0, hidden=32, learn_endpoints=learn_endpoints, key=getkey())
    t = jnp.linspace(0.0, 1.0, 10_000)
    for _ in range(5):
        params, static = eqx.partition(sched, eqx.is_inexact_array)
        leaves, tdef = jax.tree_util.tree_flatten(params)
        leaves = [p + 3.0 * jax.random.normal(getkey(), p.shape) for p in leaves]
        s2 = eqx.combine(jax.tree_util.tree_unflatten(tdef, leaves), static)
        dg = jax.vmap(s2.dgamma)(t)
        assert jnp.all(dg > 0), float(dg.min())
        np.testing.assert_allclose(s2.gamma(0.0), s2.gamma_min, rtol=0, atol=1e-12)
        np.testing.assert_allclose(s2.gamma(1.0), s2.gamma_max, rtol=0, atol=1e-12)
        assert s2.gamma_max > s2.gamma_min


def test_learned_schedule_fixed_endpoints_get_no_gradient(getkey):
    sched = sf.LearnedSchedule(gamma_min=-10.0, gamma_max=7.0, hidden=8, learn_endpoints=False, key=getkey())
    grads = eqx.filter_grad(lambda s: s.gamma(0.3) + s.gamma(0.0) + s.gamma(1.0))(sched)
    assert grads.gamma_min_param == 0 and grads.gamma_range_param == 0
    assert jnp.abs(grads.w2).sum() > 0
    learn = sf.LearnedSchedule(gamma_min=-10.0, gamma_max=7.0, hidden=8, key=getkey())
    g2 = eqx.filter_grad(lambda s: s.gamma(0.0))(learn)
    np.testing.assert_allclose(g2.gamma_min_param, 1.0)


@pytest.mark.parametrize("schedule", schedules(), ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("t", [0.0, 1e-7, 1.0])
def test_finite_in_float32(schedule, t):
    s32 = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32) if eqx.is_inexact_array(p) else p, schedule)
    t32 = jnp.asarray(t, jnp.float32)
    vals = [s32.gamma(t32), s32.dgamma(t32), *s32.alpha_sigma(t32)]
    assert all(v.dtype == jnp.float32 and jnp.isfinite(v) for v in vals)
    grad_t = jax.grad(lambda tt: jnp.sum(jnp.stack(s32.alpha_sigma(tt))) + s32.gamma(tt))(t32)
    assert jnp.isfinite(grad_t)
    for sde in (sf.VPSDE(s32), sf.SubVPSDE(s32)):
        out = [*sde.alpha_sigma(t32), sde.drift_coeff(t32), sde.diffusion(t32), sde.log_snr(t32)]
        assert all(jnp.isfinite(v) for v in out), out


def test_time_outside_unit_interval_raises():
    s = sf.LinearSchedule()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(Exception, match="`t` must lie in"):
            s.gamma(bad)
    with pytest.raises(Exception, match="`t` must lie in"):
        jax.jit(s.gamma)(1.5)


@pytest.mark.parametrize(
    "ctor, name",
    [
        (lambda: sf.LinearSchedule(beta_min=-1.0), "beta_min"),
        (lambda: sf.CosineSchedule(gamma_min=3.0, gamma_max=1.0), "gamma_min"),
        (lambda: sf.FixedLinearSchedule(gamma_min=3.0, gamma_max=1.0), "gamma_min"),
        (lambda: sf.LearnedSchedule(gamma_min=3.0, gamma_max=1.0, key=jax.random.key(0)), "gamma_min"),
    ],
)
def test_bad_schedule_arguments(ctor, name):
    with pytest.raises(ValueError, match=name):
        ctor()


def test_jit_vmap_equal_eager_and_no_retrace(getkey):
    sched = sf.LearnedSchedule(hidden=16, key=getkey())
    traces = []

    @eqx.filter_jit
    def f(s, t):
        traces.append(1)
        return jax.vmap(s.gamma)(t), jax.vmap(s.dgamma)(t)

    t = jnp.linspace(0, 1, 7)
    g, dg = f(sched, t)
    np.testing.assert_allclose(g, jnp.stack([sched.gamma(ti) for ti in t]), rtol=1e-13)
    np.testing.assert_allclose(dg, jnp.stack([sched.dgamma(ti) for ti in t]), rtol=1e-13)
    sched2 = eqx.tree_at(lambda s: s.b1, sched, sched.b1 + 0.5)
    f(sched2, t * 0.5)
    assert len(traces) == 1
