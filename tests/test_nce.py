"""NCE density-ratio estimation against closed forms: the log-normaliser of a Gaussian (within 3 sandwich standard
errors, and a 5% noise-scale error is caught), the multi-stage product of quadratic ratios as a Gaussian, and MALA
samples of a multi-stage prior."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import pytest
from jaxtyping import Array, Float

import scoreflow._energy.latent as latent
import scoreflow._energy.nce as nce
from scoreflow._energy.mcmc import MALA


MU = jnp.array([0.6, -0.4])
SIGMA = jnp.array([[1.5, 0.3], [0.3, 0.7]])


def _log_normal(z, mean, cov):
    d = z - mean
    return -0.5 * d @ jnp.linalg.solve(cov, d) - 0.5 * jnp.linalg.slogdet(2 * jnp.pi * cov)[1]


class _GaussianModel(nce.AbstractLogRatio):
    r"""An unnormalised Gaussian $\log\tilde q(z) = -\frac12 (z-m)^\top P (z-m) + c$ written as a ratio to
    $p_0 = N(0, I)$: $h = \log\tilde q - \log p_0$. NCE estimates $c = -\log Z = -\frac12\log\det(2\pi\Sigma)$."""

    dim: int = eqx.field(static=True)
    m: Float[Array, " 2"]
    p: Float[Array, " 3"]  # the precision's entries (P_00, P_01, P_11): identifiable, so the Hessian is regular
    c: Float[Array, ""]

    def __init__(self):
        self.dim = 2
        self.m = jnp.zeros(2)
        self.p = jnp.array([1.0, 0.0, 1.0])
        self.c = jnp.zeros(())

    @property
    def precision(self):
        return jnp.array([[self.p[0], self.p[1]], [self.p[1], self.p[2]]])

    def __call__(self, z):
        p = self.precision
        d = z - self.m
        return -0.5 * d @ p @ d + self.c + 0.5 * z @ z + jnp.log(2 * jnp.pi)


def _fit_full_batch(model, target, reference):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    fn = lambda p, _: nce.nce_loss(eqx.combine(p, static), target, reference)
    sol = optx.minimise(fn, optx.BFGS(rtol=1e-10, atol=1e-10), params, max_steps=500)
    return eqx.combine(sol.value, static)


@jax.jit
def _fit_and_errors(target, reference):
    fitted = _fit_full_batch(_GaussianModel(), target, reference)
    return fitted, nce.nce_standard_errors(fitted, target, reference)


def test_nce_recovers_log_normaliser(getkey):
    n = 20_000
    chol = jnp.linalg.cholesky(SIGMA)
    target = MU[None] + jax.random.normal(getkey(), (n, 2)) @ chol.T
    reference = jax.random.normal(getkey(), (2 * n, 2))  # nu = 2: the log-nu offset is exercised
    true_c = -0.5 * jnp.linalg.slogdet(2 * jnp.pi * SIGMA)[1]

    fitted, se = _fit_and_errors(target, reference)
    z = float((fitted.c - true_c) / se.c)
    assert abs(z) < 3, f"NCE log-normaliser {float(fitted.c):.4f} vs closed form {float(true_c):.4f}: {z:.2f} s.e."
    assert 0.005 < float(se.c) < 0.05, f"s.e. of c = {float(se.c)} (sandwich formula off?)"
    true_p = jnp.linalg.inv(SIGMA)
    true_p = jnp.array([true_p[0, 0], true_p[0, 1], true_p[1, 1]])
    for name, est, true, s in (("mean", fitted.m, MU, se.m), ("precision", fitted.p, true_p, se.p)):
        zs = np.abs(np.asarray((est - true) / s))
        assert np.all(zs < 4), f"{name}: {np.asarray(est)} vs {np.asarray(true)}, |z| = {zs}"

    # The same fit with reference samples 5% too wide (a noise-scale bug) lands far outside 3 s.e.
    bad, bad_se = _fit_and_errors(target, 1.05 * reference)
    assert abs(float((bad.c - true_c) / bad_se.c)) > 3


def test_sandwich_standard_errors_match_replicates(getkey):
    """Across 12 independent fits the spread of c matches the sandwich s.e. (ratio within [0.6, 1.6], the 99%
    range of a chi distribution with 11 degrees of freedom)."""
    n = 4000
    chol = jnp.linalg.cholesky(SIGMA)
    keys = jax.random.split(getkey(), 12)

    def one(k):
        k1, k2 = jax.random.split(k)
        target = MU[None] + jax.random.normal(k1, (n, 2)) @ chol.T
        reference = jax.random.normal(k2, (n, 2))
        fitted, se = _fit_and_errors(target, reference)
        return fitted.c, se.c

    cs, ses = jax.lax.map(one, keys)
    ratio = float(jnp.std(cs, ddof=1) / jnp.mean(ses))
    assert 0.6 < ratio < 1.6, f"replicate sd / sandwich s.e. = {ratio:.2f}"


def _kl_gauss(m0, c0, m1, c1):
    """KL(N(m0, c0) || N(m1, c1))."""
    p1 = jnp.linalg.inv(c1)
    d = m1 - m0
    return 0.5 * (jnp.trace(p1 @ c0) + d @ p1 @ d - m0.shape[0] + jnp.linalg.slogdet(c1)[1] - jnp.linalg.slogdet(c0)[1])


def test_multistage_product_is_the_closed_form_gaussian(getkey):
    """Quadratic stages: p_0 prod r_k is N(m, C) with the log-normaliser of `gaussian()` (checked against grid
    quadrature), the reference samples of each stage are draws of the previous prior, and K = 3 stages recover
    q = N(mu, Sigma), |mu| = 2.5, to KL < 0.005 (measured 5e-4) while one stage of the same budget stays above 0.5
    (measured 1.2)."""
    mu = jnp.array([2.0, -1.5])
    chol = jnp.linalg.cholesky(SIGMA)
    target = mu[None] + jax.random.normal(getkey(), (20_000, 2)) @ chol.T
    opt = optax.adam(optax.linear_schedule(2e-2, 2e-3, 600))
    kw = dict(sampling=nce.ExactGaussianSampling(), optimiser=opt, num_steps=600, batch_size=512)
    make = lambda k: nce.QuadraticLogRatio(2)
    prior, infos = nce.fit_multistage(nce.MultiStagePrior(2), make, target, num_stages=3, key=getkey(), **kw)
    one, _ = nce.fit_multistage(nce.MultiStagePrior(2), make, target, num_stages=1, key=getkey(), **kw)

    mean, cov, log_z = prior.gaussian()
    # the product form: log p0 + sum h_k - log Z_K is the log-density of N(mean, cov) everywhere
    zs = mean[None] + 3 * jax.random.normal(getkey(), (64, 2))
    lhs = jax.vmap(prior.unnormalised_log_prob)(zs) - log_z
    rhs = jax.vmap(lambda z: _log_normal(z, mean, cov))(zs)
    np.testing.assert_allclose(lhs, rhs, atol=1e-9)
    # log Z_K against quadrature
    h = 0.05
    g = jnp.arange(-12.0, 12.0, h) + h / 2
    grid = jnp.stack(jnp.meshgrid(g + mean[0], g + mean[1], indexing="ij"), -1).reshape(-1, 2)
    quad = jax.scipy.special.logsumexp(jax.vmap(prior.unnormalised_log_prob)(grid)) + 2 * jnp.log(h)
    assert abs(float(quad - log_z)) < 1e-8
    # the reference samples of stage k are draws of p_{k-1}: their mean is its closed-form mean
    m2, c2, _ = nce.MultiStagePrior(2, prior.ratios[:2]).gaussian()
    se = jnp.sqrt(jnp.diagonal(c2) / infos[2].reference.shape[0])
    assert np.all(np.abs(np.asarray((jnp.mean(infos[2].reference, 0) - m2) / se)) < 4)
    emp = jnp.cov(infos[2].reference.T)
    se_cov = jnp.sqrt((c2**2 + jnp.outer(jnp.diagonal(c2), jnp.diagonal(c2))) / infos[2].reference.shape[0])
    assert np.all(np.abs(np.asarray((emp - c2) / se_cov)) < 4), (emp, c2)

    kl_multi = float(_kl_gauss(mu, SIGMA, mean, cov))
    m1, c1, _ = one.gaussian()
    kl_one = float(_kl_gauss(mu, SIGMA, m1, c1))
    assert kl_multi < 0.005, f"KL(q || p_3) = {kl_multi}"
    assert kl_one > 0.5, f"KL(q || p_1) = {kl_one}: one stage of this budget should not reach q"


def test_mala_samples_of_a_multistage_prior(getkey):
    """MALA draws of p_0 r_1 r_2 (quadratic stages) have the closed-form mean and covariance within 4 s.e."""
    r1 = eqx.tree_at(
        lambda r: (r.w, r.b, r.c),
        nce.QuadraticLogRatio(2),
        (jnp.array([[0.5, 0.2], [0.2, -0.3]]), jnp.array([1.0, -2.0]), jnp.array(0.3)),
    )
    r2 = eqx.tree_at(lambda r: r.b, nce.LinearLogRatio(2), jnp.array([0.5, 0.5]))
    prior = nce.MultiStagePrior(2, (r1, r2))
    mean, cov, _ = prior.gaussian()
    n = 4000
    sampling = nce.ChainSampling(MALA(step_size=0.9), num_steps=200)
    z, acceptance = sampling(prior, jax.random.normal(getkey(), (n, 2)), key=getkey())
    assert 0.3 < float(acceptance) < 1.0
    se_mean = jnp.sqrt(jnp.diagonal(cov) / n)
    assert np.all(np.abs(np.asarray((jnp.mean(z, 0) - mean) / se_mean)) < 4), (jnp.mean(z, 0), mean)
    emp = jnp.cov(z.T)
    se_cov = jnp.sqrt((cov**2 + jnp.outer(jnp.diagonal(cov), jnp.diagonal(cov))) / n)
    assert np.all(np.abs(np.asarray((emp - cov) / se_cov)) < 4), (emp, cov)


def test_errors_name_the_argument():
    r = nce.LinearLogRatio(2)
    with pytest.raises(ValueError, match="`target` must be samples of shape \\(num, 2\\)"):
        nce.nce_loss(r, jnp.zeros((5, 3)), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="dim=0"):
        nce.QuadraticLogRatio(0)
    with pytest.raises(ValueError, match=r"ratios\[0\].dim=3"):
        nce.MultiStagePrior(2, (nce.LinearLogRatio(3),))
    with pytest.raises(TypeError, match="QuadraticLogRatio or LinearLogRatio"):
        nce.MultiStagePrior(2, (nce.MLPLogRatio(2, key=jax.random.key(0)),)).gaussian()
    with pytest.raises(ValueError, match="num_steps=0"):
        nce.ChainSampling(MALA(0.1), num_steps=0)
    with pytest.raises(ValueError, match="num_stages=0"):
        nce.fit_multistage(
            nce.MultiStagePrior(2),
            lambda k: r,
            jnp.zeros((4, 2)),
            num_stages=0,
            sampling=nce.ExactGaussianSampling(),
            optimiser=optax.adam(1e-2),
            num_steps=1,
            batch_size=1,
            key=jax.random.key(0),
        )


# --------------------------------------------------------------------------------------------------------------
# the latent-variable generator
# --------------------------------------------------------------------------------------------------------------


def _linear_model(prior_ratios=()):
    """g(z) = A z + c (an MLP with identity activation and no hidden layer is not available, so set the weights
    of a depth-0 MLP), sigma = 0.5, prior p_0 prod r_k."""
    gen = latent.MLPGenerator(2, (3,), width=4, depth=1, key=jax.random.key(0))
    lin = eqx.nn.Linear(2, 3, key=jax.random.key(1))
    a = jnp.array([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0]])
    c = jnp.array([0.1, -0.2, 0.3])
    lin = eqx.tree_at(lambda m: (m.weight, m.bias), lin, (a, c))
    gen = eqx.tree_at(lambda g: g.mlp, gen, eqx.nn.Sequential([lin]))
    return latent.LatentModel(gen, nce.MultiStagePrior(2, prior_ratios), None, 0.5), a, c


def test_latent_posterior_score_and_samples_match_the_gaussian_posterior(getkey):
    """For a linear generator and a linear-ratio prior p_0 r (a Gaussian N(b, I)), z | x is Gaussian:
    precision P = I + A^T A / s^2, mean P^-1 (b + A^T (x - c) / s^2). The score of log_joint matches it to 1e-10 and
    200 Langevin steps (s = 0.1) give its mean within 4 s.e."""
    b = jnp.array([0.8, -0.5])
    r = eqx.tree_at(lambda m: m.b, nce.LinearLogRatio(2), b)
    model, a, c = _linear_model((r,))
    x = jnp.array([1.0, -2.0, 0.5])
    prec = jnp.eye(2) + a.T @ a / 0.25
    mean = jnp.linalg.solve(prec, b + a.T @ (x - c) / 0.25)
    zs = jax.random.normal(getkey(), (16, 2))
    score = jax.vmap(jax.grad(lambda z: model.log_joint(z, x)))(zs)
    np.testing.assert_allclose(score, -(zs - mean[None]) @ prec, atol=1e-10)

    n = 1000
    sample = eqx.filter_jit(latent.latent_posterior_samples)
    z = sample(model, jnp.broadcast_to(x, (n, 3)), step_size=0.1, num_steps=200, key=getkey())
    cov = jnp.linalg.inv(prec)
    se = jnp.sqrt(jnp.diagonal(cov) / n)
    assert np.all(np.abs(np.asarray((jnp.mean(z, 0) - mean) / se)) < 4), (jnp.mean(z, 0), mean)
    # the generator loss is the mean squared error over 2 sigma^2
    gl = latent.latent_generator_loss(model, z[:8], jnp.broadcast_to(x, (8, 3)))
    expected = jnp.mean(jnp.sum((x[None] - (z[:8] @ a.T + c[None])) ** 2, -1)) / (2 * 0.25)
    np.testing.assert_allclose(gl, expected, rtol=1e-12)


def test_mcmc_prior_gradient_vanishes_at_the_posterior_and_has_the_right_sign(getkey):
    """Pang et al.'s prior loss E_{p_f}[f] - E_post[f] for a linear f = b.z: with posterior samples from N(mu, I),
    the gradient in b is E_{p_f}[z] - E_post[z] = b - mu (p_0 e^f = N(b, I)), so it is ~0 at b = mu and points
    from mu to b elsewhere (within 5 s.e. of the Monte Carlo estimate)."""
    mu = jnp.array([1.0, -0.5])
    model, _, _ = _linear_model()
    n = 2000
    z_post = mu[None] + jax.random.normal(getkey(), (n, 2))
    training = latent.MCMCPriorTraining(step_size=0.3, num_steps=100)
    grad = eqx.filter_jit(eqx.filter_grad(lambda ff, k: training.prior_loss(ff, model, z_post, z_post, k)))
    for b in (mu, jnp.array([0.0, 0.0]), jnp.array([2.0, 0.5])):
        f = eqx.tree_at(lambda m: m.b, nce.LinearLogRatio(2), b)
        g = grad(f, getkey())
        se = jnp.sqrt(2.0 / n)
        assert np.all(np.abs(np.asarray(g.b - (b - mu))) < 5 * se + 0.03), (g.b, b - mu)
