import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import scoreflow as sf

from .helpers import mixture2, mixture_full, sde_ids, sdes


def test_acceptance_snippet():
    gmm = sf.GaussianMixture(
        weights=jnp.array([0.3, 0.7]),
        means=jnp.array([[-2.0, 0.0], [1.5, 1.0]]),
        covariances=jnp.stack([0.3 * jnp.eye(2), 0.5 * jnp.eye(2)]),
    )
    sde = sf.VPSDE(sf.LinearSchedule())
    model = sf.AnalyticScore(gmm, sde)
    pt = sf.marginal(gmm, sde, 0.5)
    x = pt.sample(seed=jax.random.key(0), sample_shape=(8,))
    score = jax.vmap(model, in_axes=(None, 0))(0.5, x)
    assert jnp.allclose(score, jax.vmap(jax.grad(pt.log_prob))(x), atol=1e-4)


def test_log_prob_and_sampling_match_scipy(getkey):
    gmm = mixture_full(getkey())
    x = gmm.sample(seed=getkey(), sample_shape=(4, 5))
    assert x.shape == (4, 5, 3)
    ref = np.log(
        sum(
            float(w) * scipy.stats.multivariate_normal(np.asarray(m), np.asarray(c)).pdf(np.asarray(x))
            for w, m, c in zip(gmm.weights, gmm.means, gmm.covariances, strict=False)
        )
    )
    np.testing.assert_allclose(gmm.log_prob(x), ref, rtol=1e-10)
    big = gmm.sample(seed=getkey(), sample_shape=(40_000,))
    np.testing.assert_allclose(big.mean(0), gmm.mean(), atol=0.05)
    np.testing.assert_allclose(jnp.cov(big.T), gmm.covariance(), atol=0.12)


def test_closed_form_score_equals_autodiff(getkey):
    gmm = mixture_full(getkey())
    x = gmm.sample(seed=getkey(), sample_shape=(16,))
    np.testing.assert_allclose(gmm.score(x), jax.vmap(jax.grad(gmm.log_prob))(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sde", sdes(), ids=sde_ids())
def test_analytic_score_is_grad_of_perturbed_log_density(sde, getkey):
    gmm = mixture_full(getkey(), k=3, d=3)
    model = sf.AnalyticScore(gmm, sde)
    for frac in (1e-3, 0.1, 0.5, 1.0):
        t = jnp.asarray(sde.t0 + frac * (sde.T - sde.t0))
        pt = sf.marginal(gmm, sde, t)
        x = pt.sample(seed=getkey(), sample_shape=(8,))
        s = jax.vmap(model, in_axes=(None, 0))(t, x)
        np.testing.assert_allclose(s, jax.vmap(jax.grad(pt.log_prob))(x), rtol=1e-6, atol=1e-6)


def test_exact_denoiser_is_posterior_mean(getkey):
    gmm = mixture_full(getkey(), k=2, d=2)
    sde = sf.VPSDE(sf.CosineSchedule())
    model = sf.AnalyticScore(gmm, sde)
    t = 0.6
    a, s = sde.alpha_sigma(t)
    x = sf.marginal(gmm, sde, t).sample(seed=getkey(), sample_shape=(5,))

    def posterior_mean(xi):
        # p(x0 | x_t, k) is Gaussian: mu_k + a S_k C_k^{-1} (x - a mu_k), C_k = a^2 S_k + s^2 I
        c = a**2 * gmm.covariances + s**2 * jnp.eye(2)[None]
        r = sf.marginal(gmm, sde, t).responsibilities(xi)
        means = jax.vmap(lambda mu, S, C: mu + a * S @ jnp.linalg.solve(C, xi - a * mu))(gmm.means, gmm.covariances, c)
        return r @ means

    np.testing.assert_allclose(jax.vmap(lambda xi: model.denoise(t, xi))(x), jax.vmap(posterior_mean)(x), rtol=1e-9)


def test_marginal_of_mixture_is_mixture_of_marginals(getkey):
    gmm = mixture2()
    sde = sf.VESDE()
    pt = sf.marginal(gmm, sde, 0.3)
    _, s = sde.alpha_sigma(0.3)
    np.testing.assert_allclose(pt.covariances[0], 0.3 * jnp.eye(2) + s**2 * jnp.eye(2), rtol=1e-12)
    np.testing.assert_allclose(pt.means, gmm.means, rtol=1e-12)


def test_bad_mixture_arguments():
    with pytest.raises(ValueError, match="weights"):
        sf.GaussianMixture(jnp.ones(3) / 3, jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2))
    with pytest.raises(ValueError, match="covariances"):
        sf.GaussianMixture(jnp.ones(2) / 2, jnp.zeros((2, 2)), jnp.stack([jnp.eye(3)] * 2))
    with pytest.raises(ValueError, match="means"):
        sf.GaussianMixture(jnp.ones(2) / 2, jnp.zeros(2), jnp.stack([jnp.eye(2)] * 2))
    with pytest.raises(Exception, match="weights"):
        sf.GaussianMixture(jnp.array([-0.5, 1.5]), jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2))
    gmm = mixture2()
    with pytest.raises(ValueError, match="`x`"):
        gmm.log_prob(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="`x`"):
        sf.AnalyticScore(gmm, sf.VPSDE(sf.LinearSchedule()))(0.5, jnp.zeros((3,)))


def test_jit_vmap_no_retrace(getkey):
    gmm = mixture2()
    model = sf.AnalyticScore(gmm, sf.VPSDE(sf.LinearSchedule()))
    traces = []

    @eqx.filter_jit
    def f(m, t, x):
        traces.append(1)
        return jax.vmap(m, in_axes=(None, 0))(t, x)

    x = gmm.sample(seed=getkey(), sample_shape=(6,))
    out = f(model, jnp.asarray(0.4), x)
    np.testing.assert_allclose(out, jnp.stack([model(0.4, xi) for xi in x]), rtol=1e-12)
    f(model, jnp.asarray(0.7), x + 1.0)
    assert len(traces) == 1


def test_bad_covariances_and_weights_are_named():
    eye = jnp.eye(2)
    means = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match=r"positive definite; covariances\[1\] has smallest eigenvalue -1"):
        sf.GaussianMixture(jnp.ones(2), means, jnp.stack([eye, jnp.diag(jnp.array([1.0, -1.0]))]))
    with pytest.raises(ValueError, match=r"positive definite; covariances\[0\]"):
        sf.GaussianMixture(jnp.ones(2), means, jnp.stack([jnp.zeros((2, 2)), eye]))
    with pytest.raises(ValueError, match=r"symmetric; covariances\[0\] has max \|S - S\^T\| = 0.5"):
        sf.GaussianMixture(jnp.ones(2), means, jnp.stack([jnp.array([[1.0, 0.5], [0.0, 1.0]]), eye]))
    with pytest.raises(ValueError, match=r"finite; covariances\[1\]"):
        sf.GaussianMixture(jnp.ones(2), means, jnp.stack([eye, eye.at[0, 1].set(jnp.nan)]))
    with pytest.raises(ValueError, match="not all be zero"):
        sf.GaussianMixture(jnp.zeros(2), means, jnp.stack([eye, eye]))
    with pytest.raises(ValueError, match=r"`weights` must be finite.*nan"):
        sf.GaussianMixture(jnp.array([1.0, jnp.nan]), means, jnp.stack([eye, eye]))
    with pytest.raises(ValueError, match=r"`means` must be finite; means\[1\]"):
        sf.GaussianMixture(jnp.ones(2), means.at[1, 0].set(jnp.inf), jnp.stack([eye, eye]))
    # symmetric to rounding (A A^T in float32) is accepted
    a = jax.random.normal(jax.random.key(0), (1, 3, 3), jnp.float32)
    sf.GaussianMixture(jnp.ones(1, jnp.float32), jnp.zeros((1, 3), jnp.float32), a @ jnp.swapaxes(a, 1, 2) + 0.1)


def test_bad_covariance_under_jit_raises():
    make = eqx.filter_jit(lambda c: sf.GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), c).log_prob(jnp.zeros(2)))
    assert jnp.isfinite(make(jnp.eye(2)[None]))
    with pytest.raises(Exception, match="positive definite"):
        make(jnp.diag(jnp.array([1.0, -1.0]))[None])


def test_eigendecomposition_and_affine_marginal(getkey):
    gmm = mixture_full(getkey(), k=3, d=4)
    a = jax.random.normal(getkey(), (3, 4, 4))
    covs = jnp.einsum("kij,klj->kil", a, a) + 0.2 * jnp.eye(4)[None]
    gmm = sf.GaussianMixture(gmm.weights, gmm.means, covs)
    np.testing.assert_allclose(gmm.covariances, covs, rtol=1e-12, atol=1e-12)
    direct = sf.GaussianMixture(gmm.weights, 0.7 * gmm.means, 0.49 * covs + 0.09 * jnp.eye(4)[None])
    moved = gmm.affine(0.7, 0.3)
    x = direct.sample(seed=getkey(), sample_shape=(10,))
    np.testing.assert_allclose(moved.log_prob(x), direct.log_prob(x), rtol=1e-12)
    np.testing.assert_allclose(moved.score(x), direct.score(x), rtol=1e-10, atol=1e-12)
    # no factorisation in the compiled score: the jaxpr of the analytic score holds no LAPACK call
    sde = sf.VPSDE(sf.LinearSchedule())
    jaxpr = str(jax.make_jaxpr(lambda t, x: sf.AnalyticScore(gmm, sde)(t, x))(0.5, x[0]))
    for prim in ("cholesky", "triangular_solve", "eigh", "lu", "qr", "householder_product"):
        assert re.search(rf"= {prim}\b", jaxpr) is None, prim  # a primitive follows "= "


def _dense_log_prob(w, means, covs, x):
    """Reference log-density by dense solves (LAPACK outside any loop), differentiable everywhere."""

    def comp(mu, c):
        diff = x - mu
        return -0.5 * (diff @ jnp.linalg.solve(c, diff) + jnp.linalg.slogdet(c)[1] + x.shape[0] * jnp.log(2 * jnp.pi))

    return jax.nn.logsumexp(jnp.log(w / w.sum()) + jax.vmap(comp)(means, covs))


def test_parameter_gradients_exact_with_repeated_eigenvalues(getkey):
    """Isotropic covariances have repeated eigenvalues, where eigh's own derivative is NaN: gradients of the
    log-density, of the score's divergence (second order) and of samples flow through `covariances` instead."""
    w = jnp.array([0.4, 0.6])
    means = jnp.array([[0.5, -1.0, 0.0], [-1.0, 0.3, 0.8]])
    covs = jnp.stack([0.7 * jnp.eye(3), jnp.diag(jnp.array([0.5, 0.5, 1.2]))])
    x = jnp.array([0.2, -0.4, 0.9])
    a = jax.random.normal(getkey(), (2, 3, 3))
    sym_dir = a + jnp.swapaxes(a, 1, 2)  # symmetric direction

    def f(c, m):
        return sf.GaussianMixture(w, m, c).log_prob(x)

    g_c, g_m = jax.jit(jax.grad(f, argnums=(0, 1)))(covs, means)
    e_c, e_m = jax.jit(jax.grad(lambda c, m: _dense_log_prob(w, m, c, x), argnums=(0, 1)))(covs, means)
    assert bool(jnp.all(jnp.isfinite(g_c)))
    np.testing.assert_allclose(jnp.sum(g_c * sym_dir), jnp.sum(e_c * sym_dir), rtol=1e-10)
    np.testing.assert_allclose(g_m, e_m, rtol=1e-10)

    # second order: d/dC of the divergence of the score (what training through log_likelihood differentiates)
    def div(c):
        gmm = sf.GaussianMixture(w, means, c)
        return jnp.trace(jax.jacfwd(lambda y: gmm.score(y))(x))

    def div_ref(c):
        return jnp.trace(jax.hessian(lambda y: _dense_log_prob(w, means, c, y))(x))

    np.testing.assert_allclose(jax.jit(div)(covs), jax.jit(div_ref)(covs), rtol=1e-10)
    np.testing.assert_allclose(
        jnp.sum(jax.jit(jax.grad(div))(covs) * sym_dir), jnp.sum(jax.jit(jax.grad(div_ref))(covs) * sym_dir), rtol=1e-8
    )

    # reparameterisation gradient of samples: the symmetric square root, against its closed form on a diagonal
    key = getkey()

    def mean_sample(scale):
        c = covs.at[1].set(jnp.diag(jnp.array([0.5, 0.5, 1.2])) * scale)
        return jnp.sum(sf.GaussianMixture(w, means, c).sample(seed=key, sample_shape=(64,)))

    h = 1e-6
    fd = (mean_sample(1 + h) - mean_sample(1 - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(mean_sample)(1.0), fd, rtol=1e-6)
