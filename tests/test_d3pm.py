"""D3PM against brute force: K = 4 states, T = 5 steps, every quantity checked by enumeration."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoreflow as sf


S, T = 4, 5


def transitions():
    emb = np.array([[0.0, 0.0], [1.0, 0.1], [2.1, 0.0], [0.2, 1.4]])
    return (
        sf.UniformTransition(S, T),
        sf.AbsorbingTransition(S - 1, T),  # mask = state 3
        sf.AbsorbingTransition(S, T, mask_index=1),  # mask inside the vocabulary
        sf.GaussianTransition(S, T),
        sf.EmbeddingNeighbourTransition(emb, T, num_neighbours=1, schedule=sf.LinearBetaSchedule(0.3, 2.0)),
    )


IDS = ["uniform", "absorbing", "absorbing-explicit", "gaussian", "embedding"]


def data_states(tr):
    return np.flatnonzero(np.asarray(tr.data_mask()))


class TableModel(eqx.Module):
    """x0 logits from a fixed table indexed by (step, joint state of all D variables)."""

    table: jax.Array  # (T + 1, S ** D, D, S)
    num_steps: int = eqx.field(static=True)
    time_dependent: bool = eqx.field(static=True, default=True)

    def __call__(self, s, x_t, cond=None, *, key=None):
        t = jnp.rint(s * self.num_steps).astype(int) if self.time_dependent else 0
        idx = jnp.ravel_multi_index(tuple(x_t), (self.table.shape[-1],) * x_t.shape[0], mode="clip")
        return self.table[t, idx]


def table_model(key, d, num_steps=T, scale=1.5, time_dependent=True):
    shape = (num_steps + 1 if time_dependent else 1, S**d, d, S)
    return TableModel(scale * jax.random.normal(key, shape), num_steps, time_dependent)


@pytest.mark.parametrize("tr", transitions(), ids=IDS)
def test_matrices_against_products(tr):
    rng = np.random.default_rng(0)
    prod = np.eye(S)
    for t in range(T + 1):
        if t >= 1:
            q = np.asarray(tr.one_step_matrix(t))
            np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-13)
            assert q.min() >= 0
            prod = prod @ q
            cols = np.asarray(tr.q_column(t, jnp.arange(S)))
            np.testing.assert_allclose(cols, q.T, atol=1e-14)  # closed form == dense column
        qbar = np.asarray(tr.cumulative_matrix(t))
        np.testing.assert_allclose(qbar, prod, atol=1e-12)
        np.testing.assert_allclose(np.asarray(tr.qbar_column(t, jnp.arange(S))), prod.T, atol=1e-12)
        p0 = rng.dirichlet(np.ones(S), size=3)
        np.testing.assert_allclose(np.asarray(tr.qbar_probs(t, jnp.asarray(p0))), p0 @ prod, atol=1e-12)
    # the stationary law is reached (uniform / absorbing schedules end at alpha_bar_T = 0) or nearly so
    np.testing.assert_allclose(np.asarray(tr.prior_probs()) @ np.asarray(tr.one_step_matrix(T)),
                               np.asarray(tr.prior_probs()), atol=1e-12)


def test_schedules_and_checks():
    np.testing.assert_allclose(sf.MutualInformationSchedule().betas(4), [1 / 4, 1 / 3, 1 / 2, 1.0])
    tr = sf.AbsorbingTransition(3, 10)
    np.testing.assert_allclose(np.asarray(tr.alpha_bars), 1 - np.arange(11) / 10, atol=1e-15)  # MI: linear
    abar = np.asarray(sf.UniformTransition(3, 8).alpha_bars)
    s = np.arange(9) / 8
    np.testing.assert_allclose(abar, np.cos(0.5 * np.pi * (s + 0.008) / 1.008) / math.cos(0.5 * np.pi * 0.008 / 1.008),
                               atol=1e-12)
    with pytest.raises(ValueError, match="schedule.betas"):
        sf.UniformTransition(4, 5, sf.LinearBetaSchedule(0.5, 2.0))
    with pytest.raises(ValueError, match="mask_index"):
        sf.AbsorbingTransition(4, 5, mask_index=7)
    with pytest.raises(ValueError, match="num_neighbours"):
        sf.EmbeddingNeighbourTransition(np.eye(3), 5, num_neighbours=3)


@pytest.mark.parametrize("tr", transitions(), ids=IDS)
def test_posterior_is_bayes(tr):
    for t in range(1, T + 1):
        q, qbar_prev, qbar = (np.asarray(tr.one_step_matrix(t)), np.asarray(tr.cumulative_matrix(t - 1)),
                              np.asarray(tr.cumulative_matrix(t)))
        for x0, xt in itertools.product(data_states(tr), range(S)):
            if qbar[x0, xt] == 0:
                continue  # x_t unreachable from x_0
            bayes = q[:, xt] * qbar_prev[x0, :] / qbar[x0, xt]
            got = np.asarray(sf.q_posterior_probs(tr, t, jnp.asarray(xt), jnp.asarray(x0)))
            np.testing.assert_allclose(got, bayes, atol=1e-12)


@pytest.mark.parametrize("tr", transitions(), ids=IDS)
def test_reverse_parameterisations(tr, getkey):
    logits = jax.random.normal(getkey(), (S, S))  # one row of x0 logits per value of x_t
    for t in range(1, T + 1):
        q, qbar_prev, qbar = (np.asarray(tr.one_step_matrix(t)), np.asarray(tr.cumulative_matrix(t - 1)),
                              np.asarray(tr.cumulative_matrix(t)))
        for xt in range(S):
            p0 = np.asarray(jax.nn.softmax(sf._discrete.process.mask_x0_logits(tr, logits[xt])))
            joint = sum(p0[x0] * q[:, xt] * qbar_prev[x0] for x0 in range(S))
            ok = [x0 for x0 in range(S) if qbar[x0, xt] > 0 and p0[x0] > 0]
            got_mix = np.exp(np.asarray(sf.PosteriorMixture()(tr, t, jnp.asarray(xt), logits[xt])))
            assert np.all(np.isfinite(got_mix))
            if not ok:
                continue  # x_t unreachable under q: the posterior mixture is undefined
            w = np.array([p0[x0] for x0 in ok]) / sum(p0[x0] for x0 in ok)
            mixture = sum(wi * q[:, xt] * qbar_prev[x0] / qbar[x0, xt] for wi, x0 in zip(w, ok, strict=False))
            got_joint = np.exp(np.asarray(sf.JointMixture()(tr, t, jnp.asarray(xt), logits[xt])))
            np.testing.assert_allclose(got_mix, mixture, atol=1e-12)
            np.testing.assert_allclose(got_joint, joint / joint.sum(), atol=1e-12)


def _joint_states(d):
    return np.array(list(itertools.product(range(S), repeat=d)))  # (S**d, d), row-major like ravel_multi_index


@eqx.filter_jit
def _reverse_logp(model, tr, states, param):
    """log p(x_{t-1} | x_t) per variable for every joint state x_t and t = 1..T: shape (T, n, d, S)."""
    ts = jnp.arange(1, tr.num_steps + 1)
    return jax.vmap(lambda t: jax.vmap(lambda x: param(tr, t, x, model(t / tr.num_steps, x)))(states))(ts)


def _reverse_kernels(model, tr, d, param):
    """P[t][x_t, x_{t-1}] over joint states, t = 1..T, from the library's reverse step (product over variables)."""
    js = _joint_states(d)
    logp = np.asarray(_reverse_logp(model, tr, jnp.asarray(js), param))
    kernels = []
    for t in range(1, T + 1):
        k = np.ones((len(js), len(js)))
        for i in range(d):
            k *= np.exp(logp[t - 1][:, i, :][:, js[:, i]])
        kernels.append(k)
    return kernels


@eqx.filter_jit
def _vb_and_weights(model, tr, x0s, states, param):
    """For each x0 in `x0s` (m, d): L_T, and q(x_t | x0) of every joint state x_t with the bound's term there,
    each of shape (m, T, n)."""
    ts = jnp.arange(1, tr.num_steps + 1)

    def one(x0):
        qt = jax.vmap(lambda t: sf.q_probs(tr, t, x0))(ts)  # (T, d, S)
        w = jnp.prod(jnp.stack([qt[:, i, states[:, i]] for i in range(x0.shape[0])]), axis=0)
        vals = jax.vmap(lambda t: jax.vmap(lambda x: sf.d3pm_vb_term(model, tr, x0, t, x, parameterisation=param))(
            states))(ts)
        return sf.d3pm_prior_term(tr, x0), w, vals

    return jax.vmap(one)(x0s)


def _exact_bounds(model, tr, x0s, param=sf.PosteriorMixture()):
    """(L_T, exact bound, smallest KL term over reachable x_t) for each row of x0s, by enumerating every x_t."""
    prior, w, vals = (np.asarray(a) for a in _vb_and_weights(model, tr, x0s, jnp.asarray(_joint_states(
        x0s.shape[1])), param))
    bound = prior + np.einsum("mtn,mtn->m", w, vals)
    min_kl = np.where(w[:, 1:] > 0, vals[:, 1:], np.inf).min(axis=(1, 2))
    return prior, bound, min_kl


@pytest.mark.parametrize(
    "tr,param",
    [(tr, sf.PosteriorMixture()) for tr in transitions()]
    + [(transitions()[0], sf.JointMixture()), (transitions()[3], sf.JointMixture())],
    ids=[f"{i}-posterior" for i in IDS] + ["uniform-joint", "gaussian-joint"],
)
def test_bound_above_exact_nll(tr, param, getkey):
    # D = 1: sum over every latent path (x_1..x_T) explicitly; D = 2: the same sum by dynamic programming.
    for d in (1, 2):
        model = table_model(getkey(), d)
        kernels = _reverse_kernels(model, tr, d, param)
        prior = np.prod(np.asarray(tr.prior_probs())[_joint_states(d)], axis=1)
        marg = prior
        for k in kernels[::-1]:
            marg = marg @ k
        np.testing.assert_allclose(marg.sum(), 1.0, atol=1e-12)
        if d == 1:
            brute = np.zeros(S)
            for path in itertools.product(range(S), repeat=T + 1):  # (x_0, ..., x_T)
                p = prior[path[T]]
                for t in range(1, T + 1):
                    p *= kernels[t - 1][path[t], path[t - 1]]
                brute[path[0]] += p
            np.testing.assert_allclose(marg, brute, atol=1e-13)
        js = _joint_states(d)
        ok = np.all(np.asarray(tr.data_mask())[js], axis=1)  # x0 must be data, not [MASK]
        prior_kl, bound, min_kl = _exact_bounds(model, tr, jnp.asarray(js[ok]), param)
        assert prior_kl.min() >= -1e-12 and min_kl.min() >= -1e-12  # every KL term non-negative
        nll = -np.log(marg[ok])
        assert np.all(bound >= nll - 1e-10), (bound, nll)
        assert np.all(np.isfinite(bound))


@pytest.mark.parametrize("tr", [transitions()[0], transitions()[1], transitions()[3]], ids=["uniform", "absorbing",
                                                                                          "gaussian"])
def test_loss_estimators_and_hybrid(tr, getkey):
    d = 2
    model = table_model(getkey(), d)
    x0 = jnp.array([0, 2])
    param = sf.PosteriorMixture()
    exact_bpd = float(_exact_bounds(model, tr, x0[None], param)[1][0]) / (d * math.log(2))
    # expected cross-entropy, E_{t, x_t} -log2 p~(x0 | x_t) / D, by enumeration
    states = jnp.asarray(_joint_states(d))
    ce = 0.0
    for t in range(1, T + 1):
        w = np.prod(np.asarray(sf.q_probs(tr, t, x0))[np.arange(d), _joint_states(d)], axis=1)
        logits = jax.vmap(lambda x, t=t: sf._discrete.process.mask_x0_logits(tr, model(t / T, x)))(states)
        lp = np.asarray(jax.nn.log_softmax(logits, -1))
        ce += float(w @ -lp[:, np.arange(d), np.asarray(x0)].sum(1)) / T
    exact_ce = ce / (d * math.log(2))

    keys = jax.random.split(getkey(), 4000)

    @jax.jit
    @jax.vmap
    def estimates(k):
        return (sf.d3pm_loss(model, tr, x0, key=k), sf.d3pm_cross_entropy(model, tr, x0, key=k),
                sf.d3pm_hybrid_loss(model, tr, x0, key=k, coeff=0.3),
                sf.d3pm_hybrid_loss(model, tr, x0, key=k, coeff=0.0), sf.d3pm_bound_bpd(model, tr, x0, key=k))

    loss, xent, hyb, hyb0, bpd = estimates(keys)
    np.testing.assert_allclose(hyb, loss + 0.3 * xent, rtol=1e-12)
    np.testing.assert_allclose(hyb0, loss, rtol=1e-12)  # coefficient 0 leaves the pure bound, not the CE
    se = float(jnp.std(loss)) / math.sqrt(len(keys))
    assert abs(float(jnp.mean(loss)) - exact_bpd) < 4 * se, (float(jnp.mean(loss)), exact_bpd, se)
    se = float(jnp.std(xent)) / math.sqrt(len(keys))
    assert abs(float(jnp.mean(xent)) - exact_ce) < 4 * se
    # the all-steps evaluator: unbiased for the same bound, with a smaller variance
    se = float(jnp.std(bpd)) / math.sqrt(len(keys))
    assert abs(float(jnp.mean(bpd)) - exact_bpd) < 4 * se + 1e-12
    # gradients are finite even with -inf mask logits and zero probabilities
    g = jax.grad(lambda m: sf.d3pm_hybrid_loss(m, tr, x0, key=keys[0], coeff=0.1))(model)
    assert bool(jnp.all(jnp.isfinite(g.table)))


@pytest.mark.parametrize("tr", transitions(), ids=IDS)
def test_sampler_marginals_with_exact_x0_model(tr, getkey):
    d, n = 3, 20_000
    rng = np.random.default_rng(1)
    data = np.asarray(tr.data_mask(), float) * rng.dirichlet(np.ones(S), size=d)
    data /= data.sum(1, keepdims=True)  # independent variables, a fixed categorical law each
    log_data = jnp.log(jnp.maximum(jnp.asarray(data), 1e-300))

    def exact_x0(s, x_t, cond=None, *, key=None):  # q(x0 | x_t) by Bayes, per variable
        t = jnp.rint(s * T).astype(int)
        return log_data + sf.safe_log(tr.qbar_column(t, x_t))

    keys = jax.random.split(getkey(), n)
    chain = np.asarray(jax.jit(jax.vmap(lambda k: sf.d3pm_sample(exact_x0, tr, (d,), key=k, return_chain=True)))(keys))
    # exact marginals of the reverse chain started at the prior, built from dense matrices only
    q = [np.asarray(tr.one_step_matrix(t)) for t in range(1, T + 1)]
    fwd = [data @ np.asarray(tr.cumulative_matrix(t)) for t in range(T + 1)]  # (d, S) each
    marg = np.broadcast_to(np.asarray(tr.prior_probs()), (d, S))
    for t in range(T, -1, -1):
        hist = np.stack([np.bincount(chain[:, T - t, i], minlength=S) / n for i in range(d)])
        assert np.abs(hist - marg).max() < 0.015, (t, hist, marg)
        if isinstance(tr, sf.UniformTransition | sf.AbsorbingTransition):
            np.testing.assert_allclose(marg, fwd[t], atol=1e-12)  # they mix exactly: the forward process
        if t >= 1:  # true reverse kernel q(x_{t-1} | x_t) = q(x_{t-1}) Q_t[x_{t-1}, x_t] / q(x_t)
            rev = fwd[t - 1][:, :, None] * q[t - 1][None] / np.maximum(fwd[t], 1e-300)[:, None, :]
            marg = np.einsum("ds,dps->dp", marg, rev)
    closed_form = isinstance(tr, sf.UniformTransition | sf.AbsorbingTransition)
    np.testing.assert_allclose(marg, data, atol=1e-12 if closed_form else 0.02)


def test_continuous_absorbing_elbo(getkey):
    d = 2
    model = table_model(getkey(), d, scale=1.0, time_dependent=False)
    x0 = jnp.array([2, 0])
    mask = S - 1

    def nll(x_t):
        lp = jax.nn.log_softmax(jnp.where(jnp.arange(S) == mask, -jnp.inf, model(0.0, jnp.asarray(x_t))), -1)
        return -np.asarray(lp)[np.arange(d), np.asarray(x0)]

    # integral over t of (1/t) E[sum_masked nll]: one masked variable weighs int (1 - t) = 1/2, two int t = 1/2
    exact = 0.5 * (nll([mask, 0])[0] + nll([2, mask])[1] + nll([mask, mask]).sum())
    exact_bpd = exact / (d * math.log(2))
    keys = jax.random.split(getkey(), 40_000)
    tr = sf.AbsorbingTransition(S - 1, T)
    est = jax.jit(jax.vmap(lambda k: sf.absorbing_ctmc_loss(model, tr, x0, key=k)))(keys)
    se = float(jnp.std(est)) / math.sqrt(len(keys))
    assert abs(float(jnp.mean(est)) - exact_bpd) < 4 * se
    # the discrete bound with beta_t = 1/(T - t + 1) converges to it as T grows (error O(1/T))
    errs = []
    for steps in (20, 80):
        trs = sf.AbsorbingTransition(S - 1, steps)
        total = float(_exact_bounds(model, trs, x0[None])[1][0])
        errs.append(abs(total / (d * math.log(2)) - exact_bpd))
    assert errs[1] < 0.3 * errs[0] and errs[1] < 2.0 / 80, errs


def test_image_adapter_layout():
    class Identity(eqx.Module):
        def __call__(self, s, x, cond=None, *, key=None):
            return 5.0 * x

    x = jnp.asarray(np.random.default_rng(0).integers(0, S, (2, 3, 3)))
    logits = sf.ImageX0Net(Identity(), S)(0.5, x)
    assert logits.shape == (2, 3, 3, S)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(logits, -1)), np.asarray(x))


def test_text_helpers(tmp_path):
    corpus = sf.pydoc_corpus()
    assert len(corpus) > 300_000 and set(corpus) <= set(sf.TEXT8_ALPHABET)
    ids = sf.text8_encode(corpus[:1000])
    assert sf.text8_decode(ids) == corpus[:1000] and ids.max() < 27
    assert sf.text_chunks(ids, 64).shape == (15, 64)
    with pytest.raises(FileNotFoundError, match="nowhere/text8"):
        sf.load_text8(tmp_path / "nowhere" / "text8")


def test_transformer_learns_characters():
    # absorbing D3PM on 16-character windows of the corpus: the bound must fall well below log2(27) = 4.75 bits
    ids = sf.text8_encode(sf.pydoc_corpus()[:40_000])
    seqs = jnp.asarray(sf.text_chunks(ids, 16))
    tr = sf.AbsorbingTransition(27, 20)
    net = sf.SequenceTransformer(tr.num_states, 16, dim=32, depth=1, key=jax.random.key(0))
    opt = optax.adam(3e-3)
    state = opt.init(eqx.filter(net, eqx.is_array))

    @eqx.filter_jit
    def step(net, state, batch, key):
        def loss(net):
            ks = jax.random.split(key, batch.shape[0])
            return jnp.mean(jax.vmap(lambda x, k: sf.d3pm_hybrid_loss(net, tr, x, key=k, coeff=0.02))(batch, ks))

        val, g = eqx.filter_value_and_grad(loss)(net)
        upd, state = opt.update(g, state)
        return eqx.apply_updates(net, upd), state, val

    key = jax.random.key(1)
    for _ in range(150):
        key, kb, kl = jax.random.split(key, 3)
        batch = seqs[jax.random.randint(kb, (32,), 0, seqs.shape[0])]
        net, state, _ = step(net, state, batch, kl)
    test = seqs[-64:]
    bpd = jax.jit(jax.vmap(lambda x, k: sf.d3pm_bound_bpd(net, tr, x, key=k)))(test, jax.random.split(key, 64))
    assert float(jnp.mean(bpd)) < 4.3, float(jnp.mean(bpd))
