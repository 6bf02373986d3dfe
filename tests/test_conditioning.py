"""Conditional generation against exact references (issue 10): observation operators, the exact conditional of a
Gaussian mixture (checked against brute-force Bayes on grids), replacement, reconstruction guidance and stochastic
conditioning. float64 throughout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf


def mixture3():
    """Two full-covariance components in 3-D."""
    return sf.GaussianMixture(
        weights=jnp.array([0.35, 0.65]),
        means=jnp.array([[-1.0, 0.5, 0.3], [1.2, -0.4, -0.6]]),
        covariances=jnp.stack(
            [
                jnp.array([[0.6, 0.25, 0.1], [0.25, 0.5, -0.15], [0.1, -0.15, 0.4]]),
                jnp.array([[0.3, -0.1, 0.05], [-0.1, 0.45, 0.2], [0.05, 0.2, 0.5]]),
            ]
        ),
    )


def grid2(lim=7.0, n=281):
    u = np.linspace(-lim, lim, n)
    a, b = np.meshgrid(u, u, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], 1), (u[1] - u[0]) ** 2


def brute_force(log_unnorm, pts, area):
    """Normalised log-density on the grid and its first two moments, by quadrature (a Riemann sum is spectrally
    accurate for densities that are negligible at the edge)."""
    lp = np.asarray(log_unnorm)
    top = lp.max()
    log_z = top + np.log(np.sum(np.exp(lp - top)) * area)
    p = np.exp(lp - log_z) * area
    mean = p @ pts
    cov = (pts - mean).T @ ((pts - mean) * p[:, None])
    return lp - log_z, log_z, mean, cov


def mixture_moments(g):
    return np.asarray(g.mean()), np.asarray(g.covariance())


def check_against(cond, log_exact, log_z_exact, mean_exact, cov_exact, pts):
    lp = np.asarray(cond.log_prob(jnp.asarray(pts)))
    keep = log_exact > log_exact.max() - 20  # where the density is not negligible
    assert np.max(np.abs(lp[keep] - log_exact[keep])) < 1e-8
    mean, cov = mixture_moments(cond)
    np.testing.assert_allclose(mean, mean_exact, atol=1e-9)
    np.testing.assert_allclose(cov, cov_exact, atol=1e-9)


def test_condition_mask_matches_bayes():
    gmm = mixture3()
    obs = sf.Mask(np.array([False, True, False]))
    y = jnp.array([0.7])
    cond = sf.condition(gmm, obs, y)
    assert cond.dim == 2
    pts, area = grid2()
    x = jax.vmap(lambda z: obs.embed(y, z))(jnp.asarray(pts))
    np.testing.assert_array_equal(np.asarray(x[:, 1]), 0.7)
    np.testing.assert_array_equal(np.asarray(x[:, [0, 2]]), pts)  # free coordinates = unknown ones, in order
    log_exact, log_z, mean, cov = brute_force(gmm.log_prob(x), pts, area)
    check_against(cond, log_exact, log_z, mean, cov, pts)
    # the evidence p(y) is the normaliser of p(x) on the slice
    assert abs(sf.log_evidence(gmm, obs, y) - log_z) < 1e-8


def test_condition_linear_noise_free_matches_bayes():
    gmm = mixture3()
    obs = sf.Linear(jnp.array([[0.6, -1.1, 0.8]]))
    y = jnp.array([-0.4])
    cond = sf.condition(gmm, obs, y)
    pts, area = grid2()
    x = jax.vmap(lambda z: obs.embed(y, z))(jnp.asarray(pts))
    np.testing.assert_allclose(np.asarray(jax.vmap(obs)(x))[:, 0], -0.4, atol=1e-12)
    # density on the plane A x = y w.r.t. its area (N is orthonormal): proportional to p(x)
    log_exact, _, mean, cov = brute_force(gmm.log_prob(x), pts, area)
    check_against(cond, log_exact, None, mean, cov, pts)


def test_condition_linear_noisy_matches_bayes():
    gmm = sf.GaussianMixture(
        jnp.array([0.5, 0.2, 0.3]),
        jnp.array([[-1.5, 0.0], [1.0, 1.5], [1.0, -1.0]]),
        jnp.stack([jnp.array([[0.4, 0.2], [0.2, 0.3]]), 0.2 * jnp.eye(2), jnp.array([[0.5, -0.2], [-0.2, 0.25]])]),
    )
    nu = 0.4
    obs = sf.Linear(jnp.array([[1.0, 2.0]]), noise=nu)
    y = jnp.array([1.3])
    cond = sf.condition(gmm, obs, y)
    assert cond.dim == 2
    pts, area = grid2()
    a = np.array([1.0, 2.0])
    log_lik = -0.5 * ((1.3 - pts @ a) / nu) ** 2 - np.log(nu * np.sqrt(2 * np.pi))
    log_exact, log_z, mean, cov = brute_force(np.asarray(gmm.log_prob(jnp.asarray(pts))) + log_lik, pts, area)
    check_against(cond, log_exact, log_z, mean, cov, pts)
    assert abs(sf.log_evidence(gmm, obs, y) - log_z) < 1e-8


def test_observation_factors():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    for obs in (
        sf.Mask(np.array([[True, False], [False, True]])),
        sf.Linear(rng.normal(size=(2, 4)), shape=(2, 2)),
        sf.OrthogonalSplit(q, 2, shape=(2, 2)),
    ):
        a, p, n = (np.asarray(f()) for f in (obs.matrix, obs.right_inverse, obs.null_basis))
        np.testing.assert_allclose(a @ p, np.eye(2), atol=1e-12)
        np.testing.assert_allclose(p @ a + n @ n.T, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(n.T @ n, np.eye(2), atol=1e-12)
        x = jnp.asarray(rng.normal(size=(2, 2)))
        z = jnp.asarray(rng.normal(size=2))
        out = obs.replace(x, z)
        np.testing.assert_allclose(np.asarray(obs(out)), np.asarray(z), atol=1e-12)
        np.testing.assert_allclose(np.asarray(obs.free(out)), np.asarray(obs.free(x)), atol=1e-12)
        np.testing.assert_allclose(np.asarray(obs.embed(obs(x), obs.free(x))), np.asarray(x), atol=1e-12)
        r = jnp.asarray(rng.normal(size=2))
        np.testing.assert_allclose(np.asarray(obs.transpose(r)).ravel(), a.T @ np.asarray(r), atol=1e-12)
    with pytest.raises(ValueError, match="full row rank"):
        sf.Linear(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="orthogonal"):
        sf.OrthogonalSplit(np.array([[1.0, 1.0], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="known"):
        sf.Mask(np.array([True, True]))


def test_orthogonal_split_condition_agrees_with_linear():
    gmm = mixture3()
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    y = jnp.array([0.3])
    split, lin = sf.OrthogonalSplit(q, 1), sf.Linear(q[:1])
    c_split, c_lin = sf.condition(gmm, split, y), sf.condition(gmm, lin, y)
    # same law on the plane, in different free coordinates: compare in x
    to_x = lambda obs, c: np.asarray(jax.vmap(lambda m: obs.embed(y, m))(c.means))
    np.testing.assert_allclose(to_x(split, c_split), to_x(lin, c_lin), atol=1e-12)
    np.testing.assert_allclose(np.asarray(c_split.weights), np.asarray(c_lin.weights), atol=1e-12)


def test_replacement_draws_the_forward_noised_observation(getkey):
    sde = sf.VPSDE(sf.LinearSchedule())
    a = np.array([[1.0, 0.5, 0.0, -0.3], [0.0, 1.0, 2.0, 0.0]])
    obs = sf.Linear(a)
    y = jnp.array([0.8, -1.2])
    hook = sf.Replacement(obs, y, sde, getkey())
    n, t = 20000, 0.4
    xs = jax.random.normal(getkey(), (n, 4))
    out = jax.jit(jax.vmap(lambda x: hook(t, x)))(xs)
    alpha, sigma = (float(v) for v in sde.alpha_sigma(jnp.asarray(t)))
    z = np.asarray(jax.vmap(obs)(out))
    # q(z_t | y) = N(alpha y, sigma^2 A A^T): mean to 4 standard errors, covariance to 5%
    se = sigma * np.sqrt(np.diag(a @ a.T) / n)
    assert np.all(np.abs(z.mean(0) - alpha * np.asarray(y)) < 4 * se)
    np.testing.assert_allclose(np.cov(z.T), sigma**2 * a @ a.T, rtol=0.05, atol=0.01 * sigma**2)
    # the free part of the state is kept; the same (t, x) gives the same draw
    np.testing.assert_allclose(np.asarray(jax.vmap(obs.free)(out)), np.asarray(jax.vmap(obs.free)(xs)), atol=1e-12)
    np.testing.assert_allclose(np.asarray(hook(t, xs[0])), np.asarray(out[0]), rtol=1e-13, atol=1e-13)  # jit rounding
    # start(): the observed part of a starting state is drawn from q(z_T | y), the rest kept
    starts = jax.jit(jax.vmap(hook.start))(xs, jax.random.split(getkey(), n))
    alpha_T, sigma_T = (float(v) for v in sde.alpha_sigma(jnp.asarray(sde.T)))
    z_T = np.asarray(jax.vmap(obs)(starts))
    assert np.all(np.abs(z_T.mean(0) - alpha_T * np.asarray(y)) < 4 * sigma_T * np.sqrt(np.diag(a @ a.T) / n))
    np.testing.assert_allclose(np.cov(z_T.T), sigma_T**2 * a @ a.T, rtol=0.05, atol=0.01 * sigma_T**2)
    np.testing.assert_allclose(np.asarray(jax.vmap(obs.free)(starts)), np.asarray(jax.vmap(obs.free)(xs)), atol=1e-12)
    # at t = 0 (sigma = 0) the observed part is y itself
    mask = sf.Mask(np.array([True, False, False, True]))
    end = sf.Replacement(mask, y, sde, getkey())(0.0, xs[0])
    np.testing.assert_array_equal(np.asarray(end)[[0, 3]], np.asarray(y))
    np.testing.assert_array_equal(np.asarray(end)[[1, 2]], np.asarray(xs[0])[[1, 2]])


class DiagonalGaussian(sf.AbstractScoreModel):
    """Exact score of N(mean, diag(var)) under a linear SDE, written out (compiles in a fraction of the time of
    `AnalyticScore` of a mixture, which it equals)."""

    mean: jax.Array
    var: jax.Array
    sde: sf.AbstractSDE

    def __call__(self, t, x, cond=None, *, key=None):
        alpha, sigma = self.sde.alpha_sigma(t)
        return -(x - alpha * self.mean) / (alpha**2 * self.var + sigma**2)


def test_replacement_inpaints_independent_coordinates(getkey):
    """With independent coordinates the exact conditional of the unknown ones is their marginal, and their dynamics
    do not see the known ones: with the same keys, replacement (EDM Heun) must give the unknown coordinates of the
    unhooked sampler to rounding, and end exactly on y."""
    sde = sf.EDMSDE()
    var = jnp.array([0.5, 1.5, 0.8, 0.3])
    model = DiagonalGaussian(jnp.array([0.5, -1.0, 1.0, 0.0]), var, sde)
    mask = sf.Mask(np.array([True, False, True, False]))
    y = jnp.array([1.4, -0.2])
    n, key = 500, getkey()
    hook = sf.Replacement(mask, y, sde, getkey())
    run = lambda h: sf.sample(model, sde, key, (n, 4), sf.EDMHeun(16), hook=h).samples
    x, plain = (np.asarray(v) for v in jax.jit(lambda: (run(hook), run(None)))())  # one compilation
    np.testing.assert_array_equal(x[:, [0, 2]], np.broadcast_to(np.asarray(y), (n, 2)))
    np.testing.assert_allclose(x[:, [1, 3]], np.asarray(plain)[:, [1, 3]], rtol=0, atol=1e-12)
    assert np.all(np.abs(x[:, [1, 3]].mean(0) - np.array([-1.0, 0.0])) < 4 * np.sqrt(np.array([1.6, 0.33]) / n))


def gaussian_denoise_closed_form(m0, c, alpha, sigma, x):
    """E[x0 | x_t = x] for x0 ~ N(m0, diag c) and its (diagonal) Jacobian."""
    gain = c * alpha / (alpha**2 * c + sigma**2)
    return m0 + gain * (x - alpha * m0), gain


@pytest.mark.parametrize("sde", [sf.VPSDE(sf.CosineSchedule()), sf.EDMSDE()], ids=["vp", "edm"])
@pytest.mark.parametrize("w_r, data_var", [(0.0, None), (1.0, None), (2.5, None), (1.5, 0.7)])
def test_reconstruction_guidance_closed_form(sde, w_r, data_var, getkey):
    m0 = np.array([0.3, -0.5, 1.0, 0.2])
    c = np.array([0.5, 1.2, 0.7, 2.0])
    gmm = sf.GaussianMixture(jnp.ones(1), jnp.asarray(m0)[None], jnp.diag(jnp.asarray(c))[None])
    model = sf.AnalyticScore(mixture=gmm, sde=sde)
    a = np.array([[1.0, 0.5, 0.0, -0.3], [0.2, 1.0, 2.0, 0.0]])
    y = np.array([0.8, -1.2])
    rg = sf.ReconstructionGuidance(model, sf.Linear(a), jnp.asarray(y), w_r, data_var=data_var)
    t_mid = 0.5 if isinstance(sde, sf.VPSDE) else 1.3
    for t in (t_mid, 0.1 * t_mid):
        x = np.asarray(jax.random.normal(getkey(), (4,)))
        alpha, sigma = (float(v) for v in sde.alpha_sigma(jnp.asarray(t)))
        x0, gain = gaussian_denoise_closed_form(m0, c, alpha, sigma, x)
        s = (alpha * x0 - x) / sigma**2
        precision = (alpha / sigma) ** 2 + (0.0 if data_var is None else 1.0 / data_var)
        expected = s + w_r * precision * gain * (a.T @ (y - a @ x0))
        got = np.asarray(rg(jnp.asarray(t), jnp.asarray(x)))
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("sde", [sf.VPSDE(sf.CosineSchedule()), sf.EDMSDE()], ids=["vp", "edm"])
def test_reconstruction_guidance_exact_for_an_isotropic_gaussian(sde, getkey):
    """For x0 ~ N(mu, v I) and a noise-free Mask, p_t(z | y) is known in closed form: the known part is
    N(alpha y, sigma^2 I) and the unknown part its marginal N(alpha mu, alpha^2 v + sigma^2). Derived here without
    the guidance formula: the PiGDM variance (data_var = v, w_r = 1) gives this score exactly, and so does Ho et al.'s
    scaling with the noise-dependent weight w_r = 1 + sigma~^2 / v, while a constant w_r (1 or 2) does not: Ho et
    al.'s likelihood variance sigma~^2 exceeds the true spread of A x0 given x_t, v sigma~^2 / (v + sigma~^2)."""
    v, mu = 0.6, np.array([0.4, -0.7, 1.1, 0.2])
    gmm = sf.GaussianMixture(jnp.ones(1), jnp.asarray(mu)[None], (v * jnp.eye(4))[None])
    model = sf.AnalyticScore(mixture=gmm, sde=sde)
    known = np.array([True, False, True, False])
    mask, y = sf.Mask(known), np.array([1.3, -0.4])
    t_mid = 0.5 if isinstance(sde, sf.VPSDE) else 1.3
    for t in (t_mid, 0.1 * t_mid):
        x = np.asarray(jax.random.normal(getkey(), (4,)))
        alpha, sigma = (float(u) for u in sde.alpha_sigma(jnp.asarray(t)))
        exact = -(x - alpha * mu) / (alpha**2 * v + sigma**2)
        exact[known] = (alpha * y - x[known]) / sigma**2
        pigdm = sf.ReconstructionGuidance(model, mask, jnp.asarray(y), 1.0, data_var=v)
        np.testing.assert_allclose(np.asarray(pigdm(t, jnp.asarray(x))), exact, rtol=1e-10, atol=1e-10)
        w_exact = 1.0 + (sigma / alpha) ** 2 / v
        ho = sf.ReconstructionGuidance(model, mask, jnp.asarray(y), w_exact)
        np.testing.assert_allclose(np.asarray(ho(t, jnp.asarray(x))), exact, rtol=1e-10, atol=1e-10)
        for w_r in (1.0, 2.0):
            got = np.asarray(sf.ReconstructionGuidance(model, mask, jnp.asarray(y), w_r)(t, jnp.asarray(x)))
            assert np.max(np.abs(got - exact)) > 1e-3
            np.testing.assert_allclose(got[~known], exact[~known], rtol=1e-12, atol=1e-12)


class ViewScore(sf.AbstractScoreModel):
    """Returns its conditioning (a view's value) broadcast to x: shows which view was used."""

    sde: sf.AbstractSDE

    def __call__(self, t, x, cond=None, *, key=None):
        return jnp.broadcast_to(jnp.asarray(cond, x.dtype), x.shape)


def test_stochastic_conditioning_draws_views_uniformly(getkey):
    sde = sf.EDMSDE()
    views = jnp.array([1.0, 2.0, 3.0])
    sc = sf.StochasticConditioning(ViewScore(sde), views, getkey())
    n = 6000
    xs = jax.random.normal(getkey(), (n, 2))
    picked = np.asarray(jax.jit(jax.vmap(lambda x: sc(0.7, x)))(xs))[:, 0]
    freq = np.array([(picked == v).mean() for v in (1.0, 2.0, 3.0)])
    assert freq.sum() == 1.0
    # each 1/3 to 4 standard errors
    assert np.all(np.abs(freq - 1 / 3) < 4 * np.sqrt(2 / 9 / n))
    # the same (t, x) picks the same view; a different t draws anew
    assert float(sc(0.7, xs[0])[0]) == picked[0]
    other = np.asarray(jax.vmap(lambda x: sc(0.71, x))(xs))[:, 0]
    assert 0.5 < np.mean(other != picked) < 0.8  # 2/3 expected if independent
    # with a key from the caller, the key decides
    keys = jax.random.split(getkey(), n)
    by_key = np.asarray(jax.vmap(lambda k: sc(0.7, xs[0], key=k))(keys))[:, 0]
    assert np.all(np.abs(np.array([(by_key == v).mean() for v in (1.0, 2.0, 3.0)]) - 1 / 3) < 4 * np.sqrt(2 / 9 / n))


class ClassGaussians(sf.AbstractScoreModel):
    """Exact score of N(means[cond], var I) under a linear SDE: a class-conditional model that compiles fast."""

    means: jax.Array
    var: float
    sde: sf.AbstractSDE

    def __call__(self, t, x, cond=None, *, key=None):
        alpha, sigma = self.sde.alpha_sigma(t)
        return -(x - alpha * self.means[cond]) / (alpha**2 * self.var + sigma**2)


def test_stochastic_conditioning_with_equal_views_is_the_model_under_sample(getkey):
    """All views equal: stochastic conditioning must reproduce the conditioned model's samples (under `jit`)."""
    sde = sf.EDMSDE()
    model = ClassGaussians(jnp.array([[-1.0, 0.0], [1.0, 0.5]]), 0.2, sde)
    sc = sf.StochasticConditioning(model, jnp.array([1, 1, 1]), getkey())
    key = getkey()
    run = jax.jit(lambda m, c: sf.sample(m, sde, key, (64, 2), sf.EDMHeun(8), cond=c).samples)
    plain = run(model, jnp.ones(64, jnp.int32))
    stochastic = run(sc, None)
    np.testing.assert_allclose(np.asarray(stochastic), np.asarray(plain), rtol=0, atol=1e-12)
