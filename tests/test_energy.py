"""Energies as score models, MCMC kernels and SMC normalisers, against closed forms."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf


def _moments_within(x, mean, cov, n_se=3.0):
    """Sample mean and covariance of x (n, d) within n_se standard errors of the truth (iid draws)."""
    n = x.shape[0]
    x = np.asarray(x, np.float64)
    mean, cov = np.asarray(mean), np.asarray(cov)
    m = x.mean(0)
    se_m = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(m - mean) < n_se * se_m), f"mean {m} vs {mean} (se {se_m})"
    c = np.cov(x.T)
    se_c = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(c - cov) < n_se * se_c), f"covariance {c} vs {cov} (se {se_c})"


def test_quadratic_log_z_by_smc(getkey):
    p = jnp.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    energy = sf.QuadraticEnergy(jnp.array([1.0, -0.5, 2.0]), p)
    res = jax.jit(
        lambda k: sf.smc_log_normaliser(
            lambda x: -energy(0.0, x), base_mean=jnp.zeros(3), base_std=2.5, key=k, num_particles=400, num_repeats=8
        )
    )(getkey())
    exact = energy.log_normaliser()
    assert bool(jnp.all(res.num_tempering_steps > 1))
    # Power: the standard error is small enough that a 5% error in Z (0.05 nats) would be seen.
    assert res.stderr < 0.02, res.stderr
    assert abs(res.log_z - exact) < 3 * res.stderr, (res.log_z, exact, res.stderr)


def test_energy_wrapper_score_is_the_mixture_score(getkey):
    gmm = sf.GaussianMixture(
        jnp.array([0.2, 0.5, 0.3]),
        jnp.array([[-2.0, 0.0], [1.5, 1.0], [0.0, -1.5]]),
        jnp.stack([0.3 * jnp.eye(2), jnp.array([[0.5, 0.2], [0.2, 0.4]]), 0.1 * jnp.eye(2)]),
    )
    sde = sf.VPSDE(sf.LinearSchedule())
    model = sf.EnergyScoreModel(sf.MixtureEnergy(gmm, sde), sde)
    exact = sf.AnalyticScore(gmm, sde)
    x = 2.0 * jax.random.normal(getkey(), (16, 2))

    @jax.jit
    def both(t):
        one = lambda f: jax.vmap(f, in_axes=(None, 0))(t, x)
        return one(model), one(exact), one(model.denoise), one(exact.denoise)

    for t in (1e-3, 0.1, 0.5, 0.9):
        got, want, got_d, want_d = both(jnp.asarray(t))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
        # Derived views go through the same conversions.
        np.testing.assert_allclose(got_d, want_d, atol=1e-9)


def test_energy_wrapper_rejects_non_scalar_energy(getkey):
    class Bad(sf.AbstractEnergy):
        def __call__(self, t, x, cond=None, *, key=None):
            return x

    with pytest.raises(ValueError, match="scalar"):
        sf.EnergyScoreModel(Bad(), sf.VPSDE(sf.LinearSchedule()))(0.5, jnp.ones(2))
    with pytest.raises(TypeError, match="AbstractEnergy"):
        sf.EnergyScoreModel(lambda t, x: 0.0, sf.VPSDE(sf.LinearSchedule()))


_MEAN = jnp.array([1.0, -0.5])
_COV = jnp.array([[1.0, 0.4], [0.4, 0.8]])


_PRECISION = jnp.linalg.inv(_COV)


def _gaussian_log_prob(x):
    r = x - _MEAN
    return -0.5 * r @ _PRECISION @ r


@pytest.mark.parametrize(
    "kernel, num_steps",
    [
        # ULA's stationary variance is 1/(lam (1 - h lam / 2)), h = s^2/2: at s = 0.15 the bias is < 1.2%, half
        # the 2.2% standard error; a 5% error in the noise scale shifts the variance by 10% (4.5 s.e.). 800 steps
        # are 6.8 relaxation times of the slowest direction (1 / (h lam_min)).
        (sf.UnadjustedLangevin(0.15), 800),
        (sf.MALA(0.8), 150),
        (sf.HMC(0.3, 8), 50),
    ],
    ids=["ula", "mala", "hmc"],
)
def test_kernels_sample_a_gaussian(kernel, num_steps, getkey):
    n = 4000
    x0 = jnp.zeros((n, 2)) - 1.0
    run = jax.jit(jax.vmap(lambda x, k: sf.mcmc(kernel, _gaussian_log_prob, x, num_steps=num_steps, key=k)))
    res = run(x0, jax.random.split(getkey(), n))
    _moments_within(res.position, _MEAN, _COV)
    if isinstance(kernel, sf.UnadjustedLangevin):
        assert float(res.acceptance_rate.mean()) == 1.0
    else:
        assert 0.5 < float(res.acceptance_rate.mean()) < 1.0


def test_langevin_noise_scale_changes_the_variance(getkey):
    # The same chain at noise_scale 0.9 samples a variance 0.81x: the test of the kernel can see a noise bug.
    n = 2000
    run = jax.jit(
        jax.vmap(
            lambda k: sf.langevin_chain(
                _gaussian_log_prob, _MEAN, step_size=0.15, num_steps=600, key=k, noise_scale=0.9
            )
        )
    )
    x = np.asarray(run(jax.random.split(getkey(), n)))
    var = x.var(0)
    np.testing.assert_allclose(var, 0.81 * np.diag(_COV), rtol=0.08)


def test_mcmc_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        sf.langevin_chain(_gaussian_log_prob, jnp.zeros(2), step_size=0.1, num_steps=0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="x0"):
        sf.langevin_chain(_gaussian_log_prob, jnp.zeros(2, int), step_size=0.1, num_steps=3, key=jax.random.key(0))
    with pytest.raises(TypeError, match="AbstractMCMCKernel"):
        sf.mcmc("mala", _gaussian_log_prob, jnp.zeros(2), num_steps=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="step_size"):
        sf.MALA(-0.1)
    with pytest.raises(TypeError, match="exact kernel"):
        sf.smc_log_normaliser(
            _gaussian_log_prob,
            base_mean=jnp.zeros(2),
            base_std=1.0,
            key=jax.random.key(0),
            kernel=sf.UnadjustedLangevin(0.1),
        )


def test_spectral_norm_bounds_the_layers(getkey):
    net = sf.EnergyMLP(3, 32, 2, spectral_norm=True, power_iterations=60, key=getkey())
    # Scale a weight up: the normalised layer is unchanged, the plain one is not.
    big = eqx.tree_at(lambda m: m.hidden[0].linear.weight, net, 7.0 * net.hidden[0].linear.weight)
    x = jax.random.normal(getkey(), (3,))
    call = eqx.filter_jit(lambda m, x: m(0.5, x))
    np.testing.assert_allclose(call(net, x), call(big, x), rtol=1e-6)
    lin = net.hidden[0]
    w = lin.linear.weight
    from scoreflow._energy.nn import _sigma

    wn = jax.jit(lambda w, u: w / _sigma(w, u, 60))(w, lin.u)
    np.testing.assert_allclose(np.linalg.svd(np.asarray(wn), compute_uv=False)[0], 1.0, rtol=1e-4)
    plain = sf.EnergyMLP(3, 32, 2, key=getkey())
    plain_big = eqx.tree_at(lambda m: m.hidden[0].linear.weight, plain, 7.0 * plain.hidden[0].linear.weight)
    assert abs(float(call(plain, x) - call(plain_big, x))) > 1e-4


def test_conv_energy_shapes_and_confinement(getkey):
    net = sf.ConvEnergy(1, 8, 8, spectral_norm=True, confine=3.0, key=getkey())
    x = jax.random.normal(getkey(), (1, 8, 8))
    call = eqx.filter_jit(lambda m, x: m(2.0, x))
    e = call(net, x)
    assert e.shape == ()
    # The confinement term dominates far away: E grows like |x|^2 / (2 r^2).
    far = call(net, 100.0 * x) / (0.5 * jnp.sum((100.0 * x) ** 2) / 9.0)
    assert 0.9 < float(far) < 1.1
    with pytest.raises(ValueError, match="shape"):
        net(0.0, jnp.ones((2, 8, 8)))


def test_energy_wrapper_goes_through_log_likelihood(getkey):
    # The wrapped energy is a score model to the likelihood code: its probability-flow log-density is the mixture's
    # closed-form one (one ODE solve against the analytic marginal, not a second solve with the analytic score).
    gmm = sf.GaussianMixture(
        jnp.array([0.4, 0.6]), jnp.array([[-1.0, 0.0], [1.0, 0.5]]), jnp.stack([0.3 * jnp.eye(2), 0.5 * jnp.eye(2)])
    )
    sde = sf.VPSDE(sf.LinearSchedule())
    x = gmm.sample(seed=getkey(), sample_shape=(2,))
    model = sf.EnergyScoreModel(sf.MixtureEnergy(gmm, sde), sde)
    got = sf.log_likelihood(model, sde, x, rtol=1e-7, atol=1e-7, prior=sf.marginal(gmm, sde, 1.0))
    want = sf.marginal(gmm, sde, got.t0).log_prob(x)
    np.testing.assert_allclose(got.log_prob, want, rtol=0, atol=1e-4)
