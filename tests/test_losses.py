"""Weighted denoising score matching, weightings and time samplers, checked against analytic answers."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import scoreflow as sf
from scoreflow._loss.time_sampling import inverse_log_snr

from .helpers import mixture2, sdes


WEIGHTINGS = (
    sf.SimpleWeighting(),
    sf.LikelihoodWeighting(),
    sf.EDMWeighting(0.5),
    sf.VWeighting(),
    sf.ELBOWeighting(),
    sf.SigmoidWeighting(shift=2.0),
    sf.EDMMonotoneWeighting(),
)


class Perturbed(sf.AbstractScoreModel):
    """score + c * h(t, x) with h(t, x) = tanh(W x + b) (1 + t/T)."""

    base: sf.AbstractScoreModel
    sde: sf.AbstractSDE
    c: jax.Array
    W: jax.Array
    b: jax.Array

    def __call__(self, t, x, cond=None, *, key=None):
        return self.base(t, x) + self.c * jnp.tanh(self.W @ x + self.b) * (1.0 + t / self.sde.T)


def test_weightings_match_their_target_space_losses(getkey):
    """w ||eps - eps_hat||^2 equals the documented loss in score, x0 and v space at random (t, x, predictions)."""
    for sde in (sf.VPSDE(sf.LinearSchedule()), sf.VESDE(), sf.EDMSDE()):
        for t in (0.3 * sde.T, 0.9 * sde.T):
            alpha, sigma = sde.alpha_sigma(t)
            x0, eps, eps_hat = (jax.random.normal(getkey(), (3,)) for _ in range(3))
            x = alpha * x0 + sigma * eps
            e2 = jnp.sum((eps - eps_hat) ** 2)
            x0_hat = sf.x0_from_eps(x, eps_hat, alpha, sigma)
            s, s_hat = sf.score_from_eps(eps, sigma), sf.score_from_eps(eps_hat, sigma)
            v, v_hat = sf.v_from_eps_x0(eps, x0, alpha, sigma), sf.v_from_eps_x0(eps_hat, x0_hat, alpha, sigma)
            sig_t = sigma / alpha
            edm_x0 = (sig_t**2 + 0.25) / (sig_t * 0.5) ** 2
            checks = (
                (sf.SimpleWeighting(), jnp.sum((eps - eps_hat) ** 2)),
                (sf.LikelihoodWeighting(), 0.5 * sde.diffusion(t) ** 2 * jnp.sum((s - s_hat) ** 2)),
                (sf.VWeighting(), jnp.sum((v - v_hat) ** 2)),
                (sf.EDMWeighting(0.5), edm_x0 * jnp.sum((x0 - x0_hat) ** 2)),
            )
            for weighting, target in checks:
                assert jnp.isclose(weighting.weight(sde, t) * e2, target, rtol=1e-10), type(weighting).__name__


def test_log_snr_weightings():
    ts = jnp.linspace(0.05, 0.95, 7)
    for sde in sdes():  # g^2 / sigma^2 = -dlambda/dt for every linear SDE
        for t in ts * sde.T:
            assert jnp.isclose(sf.LikelihoodWeighting().weight(sde, t), sf.ELBOWeighting().weight(sde, t), rtol=1e-9)
    vp = sf.VPSDE(sf.CosineSchedule())
    for t in ts:
        half_dgamma = 0.5 * vp.schedule.dgamma(t)
        assert jnp.isclose(sf.ELBOWeighting().weight(vp, t), half_dgamma, rtol=1e-12)
        lam = vp.log_snr(t)
        assert jnp.isclose(sf.SigmoidWeighting(2.0).weight(vp, t), jax.nn.sigmoid(2.0 - lam) * half_dgamma, rtol=1e-12)
    edm = sf.EDMMonotoneWeighting()
    lam = jnp.linspace(-20.0, 20.0, 4001)
    w = jax.vmap(edm.log_snr_weight)(lam)
    assert jnp.all(jnp.diff(w) <= 1e-15)  # non-increasing in lambda: monotone in t
    full = jax.scipy.stats.norm.pdf(lam, 2.4, 2.4) * (jnp.exp(-lam) + 0.25) / 0.25
    right = lam >= edm.mode
    assert jnp.allclose(w[right], full[right], rtol=1e-12)
    assert jnp.isclose(edm.mode, -3.3078, atol=1e-3)  # grid argmax of the EDM weighting in lambda
    assert jnp.max(full) <= edm.log_snr_weight(jnp.array(edm.mode)) * (1 + 1e-12)  # the mode is the maximum


@pytest.mark.parametrize("sde", [sf.VPSDE(sf.LinearSchedule()), sf.VESDE(), sf.EDMSDE()], ids=["vp", "ve", "edm"])
def test_dsm_minimised_by_exact_score(sde, getkey):
    """Common random numbers: per-example losses for every weighting as a function of the perturbation size c."""
    gmm = mixture2()
    n = 4096
    x0 = gmm.sample(seed=getkey(), sample_shape=(n,))
    eps = jax.random.normal(getkey(), (n, 2))
    t, _ = sf.UniformTimeSampler()(getkey(), n, sde.t0, sde.T)

    @jax.jit
    def losses(c, W, b):
        model = Perturbed(sf.AnalyticScore(gmm, sde), sde, c, W, b)
        per = [
            jax.vmap(lambda ti, xi, ei, w=w: sf.dsm_loss(model, ti, xi, ei, weighting=w))(t, x0, eps)
            for w in WEIGHTINGS
        ]
        return jnp.stack(per)

    for _ in range(3):
        W, b = jax.random.normal(getkey(), (2, 2)), jax.random.normal(getkey(), (2,))
        at_zero = losses(jnp.array(0.0), W, b)
        slope = jax.jacfwd(losses)(jnp.array(0.0), W, b)  # per-example dl/dc, shape (weightings, n)
        mean, se = slope.mean(1), slope.std(1) / math.sqrt(n)
        assert jnp.all(jnp.abs(mean) < 4 * se), (mean, se)  # zero within 4 Monte Carlo standard errors
        for c in (-0.5, -0.1, 0.1, 0.5):
            assert jnp.all(losses(jnp.array(c), W, b).mean(1) > at_zero.mean(1))


def _gaussian_elbo_integral(sde, s2, d, t0):
    """E_t~U[t0,T] E ||eps - eps*||^2 * 0.5 g^2/sigma^2 for data N(mu, s2 I): 0.5 d [log(1 + s2 e^lam)] / (T - t0)."""
    lam0, lam1 = sde.log_snr(t0), sde.log_snr(sde.T)
    return 0.5 * d * (jnp.log1p(s2 * jnp.exp(lam0)) - jnp.log1p(s2 * jnp.exp(lam1))) / (sde.T - t0)


@pytest.mark.parametrize("sde", [sf.VPSDE(sf.LinearSchedule()), sf.VPSDE(sf.CosineSchedule()), sf.EDMSDE()],
                         ids=["vp-linear", "vp-cosine", "edm"])
def test_likelihood_weighted_loss_matches_analytic_integral_for_every_sampler(sde, getkey):
    s2, d = 0.3, 2
    gauss = sf.GaussianMixture(jnp.ones(1), jnp.array([[0.5, -1.0]]), s2 * jnp.eye(2)[None])
    model = sf.AnalyticScore(gauss, sde)
    t0 = 1e-3 * sde.T if isinstance(sde, sf.VPSDE) else sde.t0
    exact = _gaussian_elbo_integral(sde, s2, d, t0)
    x = gauss.sample(seed=getkey(), sample_shape=(64, 512))
    spreads = {}
    for sampler in (sf.UniformTimeSampler(), sf.AntitheticTimeSampler(), sf.LowDiscrepancyTimeSampler(),
                    sf.ImportanceTimeSampler(sde), sf.ImportanceTimeSampler(sde, sf.LowDiscrepancyTimeSampler())):
        f = jax.jit(jax.vmap(lambda xb, k, sampler=sampler: sf.batch_dsm_loss(
            model, xb, key=k, weighting=sf.LikelihoodWeighting(), time_sampler=sampler, t0=t0)))
        est = f(x, jax.random.split(getkey(), 64))  # 64 independent batch estimates
        mean, se = est.mean(), est.std() / 8.0
        assert abs(mean - exact) < 4 * se, (type(sampler).__name__, mean, se, exact)
        spreads[sampler] = float(est.std())
    uniform, importance = spreads[sf.UniformTimeSampler()], spreads[sf.ImportanceTimeSampler(sde)]
    assert importance < 0.5 * uniform  # importance sampling removes the 1/t-like weight


def test_time_samplers(getkey):
    key = getkey()
    t, w = sf.AntitheticTimeSampler()(key, 7, 0.1, 0.9)
    assert t.shape == (7,) and jnp.all(w == 1) and jnp.allclose(t[:3] + t[4:7], 1.0, rtol=1e-14)
    t, _ = sf.LowDiscrepancyTimeSampler()(key, 8, 0.0, 2.0)
    assert jnp.allclose(jnp.diff(jnp.sort(t)), 0.25, rtol=1e-12) and jnp.all((t >= 0) & (t < 2.0))
    t, w = sf.UniformTimeSampler()(key, 1000, 0.2, 0.4)
    assert jnp.all((t >= 0.2) & (t <= 0.4)) and jnp.all(w == 1)
    # importance sampling for VP-linear: log-SNR equally spaced under a low-discrepancy base; weights = u/q
    sde = sf.VPSDE(sf.LinearSchedule())
    t, w = sf.ImportanceTimeSampler(sde, sf.LowDiscrepancyTimeSampler())(key, 16, 1e-5, 1.0)
    lam = jnp.sort(jax.vmap(sde.log_snr)(t))
    step = (sde.log_snr(1e-5) - sde.log_snr(1.0)) / 16
    assert jnp.allclose(jnp.diff(lam), step, rtol=1e-9)
    rate = jax.vmap(lambda s: -jax.grad(sde.log_snr)(s))(t)
    assert jnp.allclose(w, 16 * step / ((1.0 - 1e-5) * rate), rtol=1e-9)
    # the closed-form inverse (VP-linear) is an inverse: t -> lambda(t) -> t round trip, and clipped to [t0, T]
    ts = jnp.linspace(1e-5, 1.0, 33)
    back = inverse_log_snr(sde, jax.vmap(sde.log_snr)(ts), 1e-5, 1.0)
    assert jnp.allclose(back, ts, rtol=1e-10, atol=1e-15)
    assert jnp.allclose(inverse_log_snr(sde, jnp.array([50.0, -50.0]), 1e-5, 1.0), jnp.array([1e-5, 1.0]))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            sf.UniformTimeSampler()(key, bad, 0.0, 1.0)


def test_float32_finite_at_edges(getkey):
    net = sf.MLP(2, width=16, depth=1, embedding_dim=8, key=getkey())
    net = eqx.tree_at(lambda n: n.out.weight, net, 0.1 * jax.random.normal(getkey(), net.out.weight.shape))
    x0 = jnp.array([0.3, -0.7], jnp.float32)
    eps = jnp.array([1.1, 0.4], jnp.float32)
    for sde in (sf.VPSDE(sf.LinearSchedule()), sf.VESDE()):
        model = sf.ScoreModel(net, sde, sf.EpsPrediction())
        model = jax.tree.map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model)
        params, static = eqx.partition(model, eqx.is_inexact_array)

        @jax.jit
        def f(p, t):
            m = eqx.combine(p, static)  # noqa: B023 (f is used within this iteration only)
            return jnp.stack([sf.dsm_loss(m, t, x0, eps, weighting=w) for w in WEIGHTINGS])

        for t in (0.0, 1e-7, 1.0):
            t = jnp.asarray(t, jnp.float32)
            values = f(params, t)
            jac = jax.jacrev(f)(params, t)
            assert values.dtype == jnp.float32 and jnp.all(jnp.isfinite(values))
            assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(jac))


def test_jit_vmap_match_eager_and_no_retrace(getkey):
    gmm = mixture2()
    sde = sf.VPSDE(sf.LinearSchedule())
    model = sf.AnalyticScore(gmm, sde)
    x = gmm.sample(seed=getkey(), sample_shape=(5,))
    eps = jax.random.normal(getkey(), (5, 2))
    ts = jnp.linspace(0.1, 0.9, 5)
    w = sf.EDMWeighting()
    eager = jnp.stack([sf.dsm_loss(model, ts[i], x[i], eps[i], weighting=w) for i in range(5)])
    mapped = jax.jit(jax.vmap(lambda t, xi, e: sf.dsm_loss(model, t, xi, e, weighting=w)))(ts, x, eps)
    assert jnp.allclose(eager, mapped, rtol=1e-12)
    count = []

    @jax.jit
    def batch(x, key):
        count.append(None)
        return sf.batch_dsm_loss(model, x, key=key, weighting=w, time_sampler=sf.AntitheticTimeSampler())

    key = getkey()
    eager_batch = sf.batch_dsm_loss(model, x, key=key, weighting=w, time_sampler=sf.AntitheticTimeSampler())
    assert jnp.allclose(batch(x, key), eager_batch, rtol=1e-12)
    batch(x + 1.0, getkey())
    assert len(count) == 1


def test_bad_inputs_raise(getkey):
    gmm = mixture2()
    model = sf.AnalyticScore(gmm, sf.VPSDE(sf.LinearSchedule()))
    x = jnp.ones(2)
    # without the test-time jaxtyping checker the library's own ValueError fires; with it, a TypeCheckError (a
    # TypeError) names the same parameter first
    with pytest.raises((ValueError, TypeError), match="[`']t[`']"):
        sf.dsm_loss(model, jnp.ones(2), x, x, weighting=sf.SimpleWeighting())
    with pytest.raises((ValueError, TypeError), match="[`']eps[`']"):
        sf.dsm_loss(model, 0.5, x, jnp.ones(3), weighting=sf.SimpleWeighting())
    with pytest.raises(ValueError, match="`x`"):
        sf.batch_dsm_loss(model, x, key=getkey(), weighting=sf.SimpleWeighting())
    with pytest.raises(ValueError, match="sigma_data"):
        sf.EDMWeighting(sigma_data=0.0)
    with pytest.raises(Exception, match="`t0` must be smaller"):
        sf.UniformTimeSampler()(getkey(), 4, 1.0, 0.5)
