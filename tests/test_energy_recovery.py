"""Diffusion recovery likelihood against Gaussian data, where every level's energy and conditional is closed-form.

Data $x \\sim N(0, vI)$: level t's marginal is $N(0, V_t I)$ with $V_t = \\bar a_t^2 v + \\bar\\sigma_t^2$, so the true
energy of $y = a'_t x_t$ is $\\theta^*_t\\lVert y\\rVert^2/2$ with $\\theta^*_t = 1/(a_t'^2 V_t)$, and the tethered
conditional is Gaussian with precision $\\theta + 1/\\sigma_{t+1}^2$.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoreflow as sf


V = 0.5
D = 2


class _Quadratic(sf.AbstractEnergy):
    """$g(y, t) = \\theta_t s_t^2 \\lVert y\\rVert^2 / 2$, level energy $g/s_t^2$ is $\\theta_t |y|^2/2$."""

    theta: jax.Array
    s2: jax.Array

    def __call__(self, t, x, cond=None, *, key=None):
        i = jnp.asarray(t).astype(jnp.int32)
        return self.theta[i] * self.s2[i] * 0.5 * jnp.sum(x**2)


def _true_theta(sc):
    v_t = sc.alphas_cum[:-1] ** 2 * V + sc.sigmas_cum[:-1] ** 2
    a = jnp.asarray([sc.scale(t) for t in range(sc.num_levels)])
    return 1.0 / (a**2 * v_t)


def _model(theta_factor=1.0, step=sf.RelativeStepSize(0.3), num_steps=30, levels=6):
    sc = sf.RecoverySchedule.paper(levels)
    probe = sf.RecoveryEBM(_Quadratic(jnp.ones(levels), jnp.ones(levels)), sc, step, num_steps)
    net = _Quadratic(theta_factor * _true_theta(sc), probe.step_sizes_squared())
    return sf.RecoveryEBM(net, sc, step, num_steps)


def _exact_negative(model, t, x_next, key):
    sc = model.schedule
    theta = model.network.theta[t]
    teth = sc.tether(t)
    sig2 = sc.sigmas[t + 1] ** 2
    prec = theta + teth / sig2
    mean = teth * x_next / (sig2 * prec)
    return mean + jax.random.normal(key, x_next.shape) / jnp.sqrt(prec)


@eqx.filter_jit
def _gradients(model, key, n):
    k_x, k_t, k_p, k_n = jax.random.split(key, 4)
    x = jnp.sqrt(V) * jax.random.normal(k_x, (n, D))
    t = jax.random.randint(k_t, (n,), 0, model.num_levels)
    pair = jax.vmap(lambda tt, xx, kk: sf.recovery_pair(model.schedule, tt, xx, key=kk))
    y_pos, x_next = pair(t, x, jax.random.split(k_p, n))
    y_neg = jax.vmap(lambda tt, xn, kk: _exact_negative(model, tt, xn, kk))(t, x_next, jax.random.split(k_n, n))

    def one(tt, yp, yn):
        def loss(theta):
            m = eqx.tree_at(lambda mm: mm.network.theta, model, theta)
            return sf.recovery_loss_from_samples(m, tt[None], yp[None], yn[None])[0]

        return jax.grad(loss)(model.network.theta)[tt]

    return jax.vmap(one)(t, y_pos, y_neg), t


def _gradient_per_level(model, key, n=24_000):
    """Per-level mean and standard error of the per-example loss gradient in theta, negatives drawn exactly (one
    compiled function for every model of the same structure)."""
    g, t = _gradients(model, key, n)
    g, t = np.asarray(g), np.asarray(t)
    means = np.array([g[t == k].mean() for k in range(model.num_levels)])
    ses = np.array([g[t == k].std(ddof=1) / np.sqrt((t == k).sum()) for k in range(model.num_levels)])
    return means, ses


def test_schedule_matches_the_reference_construction():
    sc = sf.RecoverySchedule.paper(6)
    betas = np.linspace(1e-4, 0.02, 1000)
    # Levels group DDPM steps [0], (0, 100], (100, 200], ..., (400, 500], (500, 999].
    np.testing.assert_allclose(sc.alphas_cum[-1], np.sqrt(np.prod(1 - betas[:1000])), rtol=1e-5)
    np.testing.assert_allclose(sc.alphas_cum[1], np.sqrt(np.prod(1 - betas[:101])), rtol=1e-5)
    np.testing.assert_allclose(sc.sigmas[1], np.sqrt(1 - np.prod(1 - betas[1:101])), rtol=1e-5)
    assert sc.num_levels == 6 and sf.RecoverySchedule.paper(30).num_levels == 30
    with pytest.raises(ValueError, match="num_levels"):
        sf.RecoverySchedule.paper(600)
    with pytest.raises(ValueError, match="alpha"):
        sf.RecoverySchedule(jnp.array([0.5, 1.5]))


def test_loss_gradient_is_zero_at_the_true_energy_and_points_back(getkey):
    key = getkey()
    m0, s0 = _gradient_per_level(_model(1.0), key)
    assert np.all(np.abs(m0) < 3 * s0), (m0, s0)
    # A 30% error in any level's precision gives a gradient of the right sign, many standard errors out.
    m_hi, s_hi = _gradient_per_level(_model(1.3), key)
    m_lo, s_lo = _gradient_per_level(_model(0.7), key)
    assert np.all(m_hi > 3 * s_hi), (m_hi, s_hi)
    assert np.all(m_lo < -3 * s_lo), (m_lo, s_lo)


def test_langevin_negatives_sample_the_tethered_conditional(getkey):
    # A fine, long chain (b = 0.1, 800 steps: ~4 relaxation times, ULA bias 0.25%) against the Gaussian conditional.
    model = _model(1.0, sf.RelativeStepSize(0.1), 800)
    n = 3000
    x_next = jnp.array([0.8, -0.4])
    run = jax.jit(jax.vmap(lambda t, k: model.negative(t, x_next, key=k), in_axes=(None, 0)))
    for t in (0, 3, model.num_levels - 1):
        y = run(jnp.asarray(t), jax.random.split(getkey(), n))
        sc = model.schedule
        prec = model.network.theta[t] + sc.tether(t) / sc.sigmas[t + 1] ** 2
        mean = sc.tether(t) * x_next / (sc.sigmas[t + 1] ** 2 * prec)
        se = np.sqrt(1 / prec / n)
        np.testing.assert_array_less(np.abs(np.asarray(y.mean(0) - mean)), 3 * se)
        var = np.asarray(y.var(0))
        np.testing.assert_allclose(var, 1 / prec, rtol=3 * np.sqrt(2 / n) + 0.01)


def test_progressive_sampling_recovers_the_data_variance(getkey):
    # b = 0.2, 400 steps: >= 8 relaxation times per level (1 / (h P), h = s^2 / 2), ULA variance bias ~1%.
    model = _model(1.0, sf.RelativeStepSize(0.2), 400)
    n = 3000
    x0, traj = jax.jit(jax.vmap(lambda k: sf.recovery_sample(model, (D,), key=k)))(jax.random.split(getkey(), n))
    assert traj.shape == (n, model.num_levels, D)
    x0 = np.asarray(x0)
    assert np.all(np.abs(x0.mean(0)) < 3 * np.sqrt(V / n))
    # Level 0 is the jittered data: variance a_0^2 v + sigma_0^2.
    v0 = float(model.schedule.alphas[0] ** 2 * V + model.schedule.sigmas[0] ** 2)
    np.testing.assert_allclose(x0.var(0), v0, rtol=3 * np.sqrt(2 / n) + 0.015)


def test_normalised_density_of_the_true_energy(getkey):
    model = _model(1.0)
    x = jnp.array([[0.3, -0.2], [1.0, 0.5]])
    logp, res = jax.jit(
        lambda k: sf.recovery_log_density(
            model, x, key=k, base_mean=jnp.zeros(D), base_std=1.5, num_particles=500, num_repeats=8
        )
    )(getkey())
    v0 = model.schedule.alphas[0] ** 2 * V + model.schedule.sigmas[0] ** 2
    exact = -0.5 * jnp.sum(x**2, axis=1) / v0 - 0.5 * D * jnp.log(2 * jnp.pi * v0)
    assert res.stderr < 0.03
    np.testing.assert_array_less(np.abs(np.asarray(logp - exact)), 3 * float(res.stderr))


def _log_z_levels(model):
    """Closed-form log Z_t of every level's marginal exp(-theta_t |a'_t x|^2 / 2) of x_t."""
    sc = model.schedule
    a = np.array([float(sc.scale(t)) for t in range(model.num_levels)])
    return 0.5 * D * np.log(2 * np.pi / (np.asarray(model.network.theta) * a**2))


def _log_mean_exp_and_se(v):
    m = v.max()
    r = np.exp(v - m)
    return m + np.log(r.mean()), r.std(ddof=1) / (np.sqrt(len(v)) * r.mean())


def test_log_normaliser_through_the_stages(getkey):
    model = _model(1.0)
    res = jax.jit(lambda k: sf.recovery_log_normaliser(model, (D,), key=k, num_particles=300, num_repeats=8))(getkey())
    exact = _log_z_levels(model)
    assert res.stage_log_z.shape == (8, model.num_levels) and bool(jnp.all(res.num_tempering_steps >= 1))
    assert bool(jnp.all(res.acceptance > 0.5))
    # Power: the standard error is small enough that a 5% error in Z_0 (0.05 nats) would be seen.
    assert res.stderr < 0.015, res.stderr
    assert abs(float(res.log_z) - exact[0]) < 3 * float(res.stderr), (res.log_z, exact[0], res.stderr)
    # Stage by stage (top level first): the running sums of the increments estimate log Z_t of each level.
    cum = np.cumsum(np.asarray(res.stage_log_z), axis=1)[:, ::-1]  # column t: log Z_t
    for t in range(model.num_levels):
        est, se = _log_mean_exp_and_se(cum[:, t])
        assert abs(est - exact[t]) < 3 * max(se, 1e-3), (t, est, exact[t], se)
    with pytest.raises(ValueError, match="num_particles"):
        sf.recovery_log_normaliser(model, (D,), key=getkey(), num_particles=1)
    with pytest.raises(TypeError, match="RecoveryEBM"):
        sf.recovery_log_normaliser(model.network, (D,), key=getkey())


def test_update_skips_non_finite_steps(getkey):
    net = sf.EnergyMLP(D, 8, 1, embedding_dim=4, key=getkey())
    model = sf.RecoveryEBM(net, sf.RecoverySchedule.paper(2), num_steps=2)  # small: this test is about the update
    opt = sf.recovery_optimiser(1e-3, warmup_steps=0)
    state = sf.init_recovery_optimiser(model, opt)
    x = jnp.full((8, D), jnp.nan)
    step = eqx.filter_jit(lambda m, s, xx, k: sf.recovery_update(m, s, opt, xx, key=k))
    new, state, loss, info = step(model, state, x, getkey())
    assert not np.isfinite(float(loss)) and not bool(info.finite_negatives)
    same = jax.tree_util.tree_map(
        lambda a, b: bool(jnp.all(a == b)), eqx.filter(model, eqx.is_array), eqx.filter(new, eqx.is_array)
    )
    assert all(jax.tree_util.tree_leaves(same))
    assert int(optax.tree_utils.tree_get(state, "total_notfinite")) == 1
    # A finite batch moves the parameters.
    x = jnp.sqrt(V) * jax.random.normal(getkey(), (8, D))
    new2, *_ = step(model, sf.init_recovery_optimiser(model, opt), x, getkey())
    assert not bool(jnp.all(new2.network.out.linear.weight == model.network.out.linear.weight))


def test_recovery_errors():
    net = sf.EnergyMLP(D, 16, 2, key=jax.random.key(0))
    with pytest.raises(TypeError, match="step_size"):
        sf.RecoveryEBM(net, sf.RecoverySchedule.paper(6), 0.1)
    with pytest.raises(ValueError, match="b"):
        sf.RelativeStepSize(1.5)
    model = sf.RecoveryEBM(net, sf.RecoverySchedule.paper(6))
    with pytest.raises(TypeError):  # a float level: the annotation (or, unchecked, _level) refuses it
        model(0.5, jnp.ones(D))
