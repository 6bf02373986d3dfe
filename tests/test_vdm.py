"""VDM continuous-time VLB: decoders, schedule invariance, endpoint gradients, variance minimisation."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import scoreflow as sf
from scoreflow._loss.decoder import log_normal_mass


L = 256
GMM = sf.GaussianMixture(
    jnp.array([0.5, 0.5]), jnp.array([[-0.4, 0.3], [0.4, -0.2]]), jnp.stack([0.02 * jnp.eye(2)] * 2)
)


def quantise(x, levels=L):
    return jnp.round((jnp.clip(x, -1, 1) + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1


def data(key, n):
    return quantise(GMM.sample(seed=key, sample_shape=(n,)))


def bent_learned_schedule(gamma_min, gamma_max, key):
    """A LearnedSchedule far from linear (large positive-weight interior)."""
    s = sf.LearnedSchedule(gamma_min, gamma_max, hidden=16, learn_endpoints=False, key=key)
    k1, k2 = jax.random.split(key)
    return eqx.tree_at(
        lambda s: (s.w2, s.b2, s.w3),
        s,
        (jax.random.normal(k1, (16,)) + 3.0, 3.0 * jax.random.normal(k2, (16,)), jnp.zeros(16) + 1.0),
    )


def test_discrete_uniform_decoder_gives_log2_levels(getkey):
    model = sf.AnalyticScore(GMM, sf.VPSDE(sf.FixedLinearSchedule(-10.0, 8.0)))
    for levels in (2, 256, 1000):
        x = quantise(GMM.sample(seed=getkey(), sample_shape=(4,)), levels)
        out = sf.batch_vdm_vlb(model, x, key=getkey(), num_levels=levels, decoder=sf.DiscreteUniformDecoder())
        # exact up to the one rounding of log(L) / (d log 2)
        assert jnp.allclose(out.reconstruction, math.log2(levels), rtol=1e-15, atol=0)


def test_discretised_gaussian_decoder_normalised_and_stable():
    dec = sf.DiscretisedGaussianDecoder()
    levels = jnp.linspace(-1.0, 1.0, 16)
    for mean, std in ((0.1, 0.05), (0.93, 0.002), (-3.0, 0.3), (0.0, 40.0)):
        logp = dec.log_prob(levels, jnp.full(16, mean), jnp.array(1.0), jnp.array(std), 16)
        assert jnp.isclose(jax.nn.logsumexp(logp), 0.0, atol=1e-12)  # the bins tile the line
    # against direct CDF differences where those are accurate (float64, moderate arguments)
    a, b = jnp.array([-1.3, 0.2, 2.0]), jnp.array([-0.4, 0.9, 2.5])
    ref = jnp.log(jax.scipy.stats.norm.cdf(b) - jax.scipy.stats.norm.cdf(a))
    assert jnp.allclose(log_normal_mass(a, b), ref, rtol=1e-12)
    # far tails in float32 agree with float64 to 1e-5 relative; narrow bins: midpoint branch continuous
    a64, b64 = jnp.array([30.0, -40.0, 0.3, 0.3]), jnp.array([30.5, -39.0, 0.3 + 1.001e-3, 0.3 + 0.999e-3])
    r32 = log_normal_mass(a64.astype(jnp.float32), b64.astype(jnp.float32))
    r64 = log_normal_mass(a64, b64)
    assert jnp.all(jnp.isfinite(r32)) and jnp.allclose(r32, r64, rtol=1e-5)
    width = b64[2:] - a64[2:]
    assert jnp.allclose(r64[2:], jnp.log(width) + jax.scipy.stats.norm.logpdf(a64[2:] + width / 2), atol=1e-6)


def _vlb_stats(schedule, x, key):
    model = sf.AnalyticScore(GMM, sf.VPSDE(schedule))
    f = jax.jit(lambda x, k: sf.batch_vdm_vlb(model, x, key=k, num_levels=L))  # model closed over (static floats)
    # chunks of 20k: one compiled function; (a single 100k-example call stalled XLA:CPU on this machine)
    chunks = [f(xc, jax.random.fold_in(key, i)) for i, xc in enumerate(jnp.split(x, x.shape[0] // 20_000))]
    out = jax.tree.map(lambda *a: jnp.concatenate([c.reshape(2, -1) for c in a], axis=1).reshape(-1), *chunks)
    n = x.shape[0]
    pair_means = out.total.reshape(2, n // 2).mean(0)  # antithetic pairs are the independent units
    return float(out.total.mean()), float(pair_means.std() / math.sqrt(n // 2)), out


def test_vlb_invariant_to_schedule_given_endpoints(getkey):
    x, key = data(getkey(), 100_000), getkey()
    linear = _vlb_stats(sf.FixedLinearSchedule(-10.0, 8.0), x, key)
    cosine = _vlb_stats(sf.CosineSchedule(-10.0, 8.0), x, key)
    bent = bent_learned_schedule(-10.0, 8.0, getkey())
    ts = jnp.linspace(0.0, 1.0, 11)
    assert jnp.max(jnp.abs(jax.vmap(bent)(ts) - (-10.0 + 18.0 * ts))) > 1.0  # really a different schedule
    learned = _vlb_stats(bent, x, key)
    moved = _vlb_stats(sf.FixedLinearSchedule(-4.0, 8.0), x, key)
    print({k: v[:2] for k, v in dict(linear=linear, cosine=cosine, learned=learned, moved=moved).items()})
    # same endpoints: same prior and reconstruction draws, totals agree within 4 combined standard errors
    for other in (cosine, learned):
        assert jnp.allclose(other[2].prior, linear[2].prior)
        assert jnp.allclose(other[2].reconstruction, linear[2].reconstruction)
        assert abs(other[0] - linear[0]) < 4 * math.hypot(other[1], linear[1])
    # different gamma_min: a clearly different bound
    assert abs(moved[0] - linear[0]) > 8 * math.hypot(moved[1], linear[1])


def test_prior_term_closed_form(getkey):
    sched = sf.FixedLinearSchedule(-10.0, 2.0)
    model = sf.AnalyticScore(GMM, sf.VPSDE(sched))
    x = data(getkey(), 3)
    out = sf.vdm_vlb(model, x[0], 0.5, key=getkey(), num_levels=L)
    a2, s2 = jax.nn.sigmoid(-2.0), jax.nn.sigmoid(2.0)
    kl = 0.5 * jnp.sum(s2 + a2 * x[0] ** 2 - 1.0 - jnp.log(s2))
    assert jnp.isclose(out.prior, kl / (2 * math.log(2)), rtol=1e-12)
    assert jnp.isclose(out.total, out.diffusion + out.prior + out.reconstruction, rtol=1e-14)


def _mlp_model(key, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(key, 3)
    net = sf.MLP(2, width=32, depth=1, embedding_dim=16, key=k1)
    net = eqx.tree_at(lambda n: n.out.weight, net, 0.1 * jax.random.normal(k3, net.out.weight.shape))
    model = sf.ScoreModel(net, sf.VPSDE(sf.LearnedSchedule(-10.0, 8.0, hidden=16, key=k2)), sf.EpsPrediction())
    # explicit dtypes: strongly typed leaves (optimiser updates then keep the jit cache) in the requested precision
    return jax.tree.map(lambda a: jnp.array(a, dtype=dtype) if eqx.is_inexact_array(a) else a, model)


def test_vlb_gradient_wrt_endpoints_matches_finite_differences(getkey):
    model = _mlp_model(getkey())
    x, key = data(getkey(), 64), getkey()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    f = jax.jit(lambda p: sf.batch_vdm_vlb(eqx.combine(p, static), x, key=key, num_levels=L).total.mean())
    g = jax.grad(f)(params).sde.schedule
    for name in ("gamma_min_param", "gamma_range_param"):
        get = lambda p, name=name: getattr(p.sde.schedule, name)
        h = 1e-5
        up = f(eqx.tree_at(get, params, get(params) + h))
        down = f(eqx.tree_at(get, params, get(params) - h))
        fd = (up - down) / (2 * h)
        assert jnp.isfinite(fd) and abs(fd) > 1e-3
        assert jnp.isclose(getattr(g, name), fd, rtol=1e-5)


def test_variance_minimisation_reduces_estimator_variance(getkey):
    model = _mlp_model(jax.random.key(11))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    traces = []

    @jax.jit
    def loss_and_grads(p, key):
        traces.append(None)
        kx, kl = jax.random.split(key)
        return sf.vdm_loss_and_grads(eqx.combine(p, static), data(kx, 256), key=kl, num_levels=L)

    x_eval, k_eval = data(jax.random.key(12), 8192), jax.random.key(13)

    @jax.jit
    def diffusion_stats(p):
        d = sf.batch_vdm_vlb(
            eqx.combine(p, static), x_eval, key=k_eval, num_levels=L, time_sampler=sf.UniformTimeSampler()
        ).diffusion
        return d.mean(), d.var(), d.std() / math.sqrt(d.size)

    def train(p, mask, lr, steps, key):
        opt = optax.multi_transform({True: optax.adam(lr), False: optax.set_to_zero()}, lambda _: mask)
        state = opt.init(p)
        update = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(*opt.update(g, s, p)))
        for i in range(steps):
            _, g = loss_and_grads(p, jax.random.fold_in(key, i))
            p, state = update(p, state, g)
        return p

    interior = {id(a) for a in sf.learned_schedule_interior(params)}
    network = {id(a) for a in jax.tree.leaves(params.network)}
    params = train(params, jax.tree.map(lambda a: id(a) in network, params), 1e-2, 100, jax.random.key(14))
    mean0, var0, se0 = diffusion_stats(params)
    interior = {id(a) for a in sf.learned_schedule_interior(params)}
    params = train(params, jax.tree.map(lambda a: id(a) in interior, params), 0.1, 40, jax.random.key(15))
    mean1, var1, se1 = diffusion_stats(params)
    print(f"diffusion term (bits/dim): before mean {mean0:.4f} +- {se0:.4f} var {var0:.3f}; "
          f"after mean {mean1:.4f} +- {se1:.4f} var {var1:.3f}")
    assert len(traces) == 1  # one compilation for all 140 steps
    sched = eqx.combine(params, static).sde.schedule
    assert sched(0.0) == -10.0 and sched(1.0) == 8.0
    assert var1 < 0.95 * var0
    assert abs(mean1 - mean0) < 4 * math.hypot(se0, se1)


def test_float32_finite_at_edges(getkey):
    model = _mlp_model(getkey(), jnp.float32)
    x = data(getkey(), 1)[0].astype(jnp.float32)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    key = getkey()

    @jax.jit
    def f(p, t):
        return sf.vdm_vlb(eqx.combine(p, static), x, t, key=key, num_levels=L).total

    for t in (0.0, 1e-7, 1.0):
        t = jnp.asarray(t, jnp.float32)
        value, grads = jax.value_and_grad(f)(params, t)
        assert value.dtype == jnp.float32 and jnp.isfinite(value)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_jit_vmap_match_eager_and_no_retrace(getkey):
    model = sf.AnalyticScore(GMM, sf.VPSDE(sf.FixedLinearSchedule(-10.0, 8.0)))
    x, key = data(getkey(), 3), getkey()
    ts = jnp.array([0.0, 0.4, 1.0])
    keys = jax.random.split(key, 3)
    eager = [sf.vdm_vlb(model, x[i], ts[i], key=keys[i], num_levels=L).total for i in range(3)]
    mapped = jax.vmap(lambda xi, ti, ki: sf.vdm_vlb(model, xi, ti, key=ki, num_levels=L).total)(x, ts, keys)
    assert jnp.allclose(jnp.stack(eager), mapped, rtol=1e-12)
    count = []

    @jax.jit
    def batch(x, key):
        count.append(None)
        return sf.batch_vdm_vlb(model, x, key=key, num_levels=L).total

    assert jnp.allclose(batch(x, key), sf.batch_vdm_vlb(model, x, key=key, num_levels=L).total, rtol=1e-12)
    batch(data(getkey(), 3), getkey())
    assert len(count) == 1


def test_bad_inputs_raise(getkey):
    model = sf.AnalyticScore(GMM, sf.VPSDE(sf.FixedLinearSchedule(-10.0, 8.0)))
    x = data(getkey(), 4)
    for levels in (0, -3, 1):
        with pytest.raises(ValueError, match="num_levels"):
            sf.batch_vdm_vlb(model, x, key=getkey(), num_levels=levels)
    with pytest.raises(ValueError, match="`x`"):
        sf.batch_vdm_vlb(model, x[0], key=getkey(), num_levels=L)
    with pytest.raises(ValueError, match="`x`"):
        sf.vdm_vlb(model, jnp.array(0.5), 0.5, key=getkey(), num_levels=L)
    with pytest.raises(Exception, match="`x` must lie in"):
        sf.vdm_vlb(model, jnp.array([0.5, 1.5]), 0.5, key=getkey(), num_levels=L)
    with pytest.raises(TypeError, match="model.sde"):
        sf.vdm_vlb(sf.AnalyticScore(GMM, sf.VESDE()), x[0], 0.5, key=getkey(), num_levels=L)
    with pytest.raises(ValueError, match="`model`"):
        sf.learned_schedule_interior(model)
