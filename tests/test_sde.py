import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import scoreflow as sf

from .helpers import mixture2, sde_ids, sdes


def _times(sde):
    return jnp.linspace(sde.t0, sde.T * 0.999, 13)


@pytest.mark.parametrize("sde", sdes(), ids=sde_ids())
def test_drift_and_diffusion_generate_the_marginals(sde):
    # For dx = f x dt + g dW: d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2.
    for t in _times(sde):
        (a, s), (da, ds) = jax.jvp(sde.alpha_sigma, (t,), (jnp.ones_like(t),))
        f, g = sde.drift_coeff(t), sde.diffusion(t)
        np.testing.assert_allclose(da, f * a, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(2 * s * ds, 2 * f * s**2 + g**2, rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(sde.log_snr(t), 2 * jnp.log(a / s), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", sdes(), ids=sde_ids())
def test_euler_maruyama_simulation_matches_marginal(sde):
    # Simulate the SDE's own drift/diffusion from p_{t_a} to t_b and compare with marginal(gmm, sde, t_b).
    gmm = mixture2()
    t_a, t_b = (0.0, 0.6) if sde.T == 1.0 else (0.0, 3.0)
    n, steps = 20_000, 400
    key = jax.random.key(11)
    k0, kw, kref = jax.random.split(key, 3)
    x = sf.marginal(gmm, sde, t_a).sample(seed=k0, sample_shape=(n,))
    ts = jnp.linspace(t_a, t_b, steps + 1)

    def step(x, inp):
        t, dt, k = inp
        dw = jnp.sqrt(dt) * jax.random.normal(k, x.shape)
        return x + sde.drift_coeff(t) * x * dt + sde.diffusion(t) * dw, None

    keys = jax.random.split(kw, steps)
    x, _ = jax.lax.scan(step, x, (ts[:-1], jnp.diff(ts), keys))
    pt = sf.marginal(gmm, sde, t_b)
    ref = pt.sample(seed=kref, sample_shape=(n,))
    scale = jnp.sqrt(jnp.diag(pt.covariance()))
    np.testing.assert_allclose(x.mean(0), pt.mean(), atol=0.05 * float(scale.max()))
    np.testing.assert_allclose(jnp.cov(x.T), pt.covariance(), rtol=0.06, atol=0.03 * float(scale.max()) ** 2)
    for j, direction in enumerate([jnp.array([1.0, 0.0]), jnp.array([0.6, 0.8])]):
        p = scipy.stats.ks_2samp(np.asarray(x @ direction), np.asarray(ref @ direction)).pvalue
        assert p > 1e-3, (j, p)


@pytest.mark.parametrize("sde", sdes(), ids=sde_ids())
def test_prior(sde):
    x = jnp.linspace(-2, 2, 12).reshape(3, 4)
    lp = sde.prior((3, 4)).log_prob(x)
    np.testing.assert_allclose(sde.prior_log_prob(x), lp, rtol=1e-12)
    s = sde.prior_std()
    ref = scipy.stats.norm(0, s).logpdf(np.asarray(x)).sum()
    np.testing.assert_allclose(lp, ref, rtol=1e-12)
    # the prior is close to the true marginal at T for a unit-scale dataset
    a, sig = sde.alpha_sigma(sde.T)
    assert abs(float(jnp.sqrt(a**2 + sig**2)) / s - 1) < 0.01


def test_edm_and_ve_conventions():
    edm = sf.EDMSDE()
    assert edm.T == 80.0 and edm.t0 == 0.002
    np.testing.assert_allclose(edm.alpha_sigma(3.0), (1.0, 3.0))
    ve = sf.VESDE(sigma_min=0.01, sigma_max=50.0)
    np.testing.assert_allclose(ve.alpha_sigma(0.5)[1], 0.01 * (5000.0**0.5), rtol=1e-12)
    np.testing.assert_allclose(ve.diffusion(0.5), 0.01 * 5000**0.5 * np.sqrt(2 * np.log(5000)), rtol=1e-12)
    sub = sf.SubVPSDE(sf.LinearSchedule())
    vp = sf.VPSDE(sf.LinearSchedule())
    np.testing.assert_allclose(sub.alpha_sigma(0.4)[1], 1 - vp.alpha_sigma(0.4)[0] ** 2, rtol=1e-12)


@pytest.mark.parametrize(
    "ctor, name",
    [
        (lambda: sf.VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: sf.VESDE(sigma_min=-1.0), "sigma_min"),
        (lambda: sf.VESDE(sigma_min=5.0, sigma_max=1.0), "sigma_max"),
        (lambda: sf.EDMSDE(sigma_min=0.0), "sigma_min"),
        (lambda: sf.VPSDE(sf.LinearSchedule(), t0=1.5), "t0"),
    ],
)
def test_bad_sde_arguments(ctor, name):
    with pytest.raises(ValueError, match=name):
        ctor()


def test_time_outside_domain_raises():
    with pytest.raises(Exception, match="`t` must lie in"):
        sf.EDMSDE().alpha_sigma(100.0)
    with pytest.raises(Exception, match="`t` must lie in"):
        sf.VESDE().diffusion(-0.5)
    with pytest.raises(Exception, match="`t` must lie in"):
        sf.VPSDE(sf.CosineSchedule()).drift_coeff(2.0)
