"""Guidance wrappers against exact densities: a class-labelled 2-D mixture (exact class posterior) and 1-D Gaussians
whose guided probability-flow maps are affine with closed forms (issue 10, G3 and G4)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf


def labelled():
    """Three full-covariance components in 2-D, two classes (class 1 owns two components)."""
    gmm = sf.GaussianMixture(
        weights=jnp.array([0.3, 0.25, 0.45]),
        means=jnp.array([[-2.0, 0.5], [2.0, 1.0], [0.5, -2.0]]),
        covariances=jnp.stack(
            [0.3 * jnp.eye(2), jnp.array([[0.5, 0.2], [0.2, 0.4]]), jnp.array([[0.3, -0.1], [-0.1, 0.6]])]
        ),
    )
    return sf.LabelledMixture(gmm, jnp.array([0, 1, 1]))


def gauss(mu, s):
    """N(mu, s^2) in 1-D as a one-component mixture."""
    return sf.GaussianMixture(jnp.ones(1), jnp.array([[mu]]), jnp.array([[[s**2]]]))


class TwoMeans(sf.AbstractScoreModel):
    """Exact score of N(means[cond], s^2 I) under a linear SDE (on EDM: -(x - mu)/(s^2 + t^2)); `cond` an index
    (-1: the last entry, a null label). A conditional model that compiles in a fraction of a mixture's time."""

    means: tuple[float, ...]
    s: float
    sde: sf.AbstractSDE

    def __call__(self, t, x, cond=None, *, key=None):
        mu = jnp.asarray(self.means)[cond]
        alpha, sigma = self.sde.alpha_sigma(t)
        return -(x - alpha * mu) / (alpha**2 * self.s**2 + sigma**2)


class Shifted(sf.AbstractScoreModel):
    """Exact score of N(mu, s^2 I) under any linear SDE, any shape: a model that compiles in a fraction of a
    mixture's time, for tests whose claim does not depend on the model."""

    mu: float
    s: float
    sde: sf.AbstractSDE

    def __call__(self, t, x, cond=None, *, key=None):
        alpha, sigma = self.sde.alpha_sigma(t)
        return -(x - alpha * self.mu) / (alpha**2 * self.s**2 + sigma**2)


class Counted(sf.AbstractScoreModel):
    """Wraps a score model: counts its evaluations at run time (a debug callback runs only in the branch of a
    `lax.cond` that is taken) and returns NaN outside [lo, hi] in sigma/alpha."""

    model: sf.AbstractScoreModel
    lo: float
    hi: float

    @property
    def sde(self):
        return self.model.sde

    def __call__(self, t, x, cond=None, *, key=None):
        jax.debug.callback(lambda: CALLS.append(1))
        alpha, sigma = self.sde.alpha_sigma(t)
        inside = (sigma / alpha >= self.lo) & (sigma / alpha <= self.hi)
        return jnp.where(inside, self.model(t, x, cond), jnp.nan)


CALLS: list[int] = []

VP = sf.VPSDE(sf.LinearSchedule())
EDM = sf.EDMSDE()


@pytest.mark.parametrize("sde", [VP, EDM], ids=["vp", "edm"])
def test_g3_classifier_guidance_equals_cfg(sde, getkey):
    """Exact classifier guidance with the exact class posterior equals CFG with the exact conditional and
    unconditional scores at the same weight: grad log p_t(y|x) = s(x|y) - s(x) (Bayes)."""
    lm = labelled()

    @jax.jit
    def scores(t, x, y, g):
        cfg = sf.ClassifierFreeGuidance(lm.score_model(sde), y, sf.LabelledScore.NULL, sf.Constant(g))
        cg = sf.ClassifierGuidance(lm.unconditional_score(sde), lm.classifier(sde), y, sf.Constant(g))
        exact = lm.conditional_score(sde, y)
        return tuple(jax.vmap(m, in_axes=(None, 0))(t, x) for m in (cfg, cg, exact))

    worst = 0.0
    for t in (0.05 * sde.T, 0.2 * sde.T, 0.5 * sde.T, 0.9 * sde.T):
        x = sf.marginal(lm.mixture, sde, t).sample(seed=getkey(), sample_shape=(6,))
        for y in (0, 1):
            for g in (0.5, 1.0, 3.0):
                a, b, exact = scores(t, x, y, g)
                worst = max(worst, float(jnp.max(jnp.abs(a - b))))
                if g == 1.0:  # both are then the exact class-conditional score
                    np.testing.assert_allclose(a, exact, rtol=0, atol=1e-10)
    print(f"G3 {type(sde).__name__}: max |CG - CFG| = {worst:.2e}")
    assert worst < 1e-10, worst


def test_class_posterior_is_bayes(getkey):
    """log p_t(y|x) = log p(y) + log p_t(x|y) - log p_t(x), each side from its own mixture."""
    lm = labelled()
    t = 0.3
    pt = sf.marginal(lm.mixture, VP, t)
    x = pt.sample(seed=getkey(), sample_shape=(5,))

    classes = [sf.marginal(lm.class_mixture(y), VP, t) for y in (0, 1)]

    @jax.jit  # one compilation instead of op-by-op dispatch
    def both_sides(x):
        post = jax.vmap(lambda xi: lm.log_posterior(VP, t, xi))(x)
        return post, [c.log_prob(x) for c in classes], pt.log_prob(x)

    post, conds, log_pt = both_sides(x)
    for y in (0, 1):
        np.testing.assert_allclose(post[:, y], jnp.log(lm.class_prior()[y]) + conds[y] - log_pt, atol=1e-12)
    np.testing.assert_allclose(jax.nn.logsumexp(post, axis=1), 0.0, atol=1e-12)


@pytest.mark.parametrize("weight", [sf.Constant(2.5), sf.Interval(0.5, 2.0, 2.5), sf.Ramp(0.3, 3.0, 1.0, 4.0)])
def test_combination_is_the_same_in_eps_x0_v(weight, getkey):
    """At fixed (t, x), eps, x0 and v of the guided model are the same affine combination of the two models'."""
    main, ref = Shifted(0.5, 0.8, VP), Shifted(-0.3, 1.1, VP)
    guided = sf.Guided(main, ref, weight)

    @jax.jit
    def check(t, x):
        alpha, sigma = VP.alpha_sigma(t)
        g = weight(sigma / alpha)
        out = {}
        for name in ("__call__", "eps", "denoise", "v"):
            f = lambda m, name=name: jax.vmap(lambda xi: getattr(m, name)(t, xi))(x)
            out[name] = (f(guided), f(ref) + g * (f(main) - f(ref)))
        return out

    for t in (0.1, 0.4, 0.7, 0.95):
        x = jax.random.normal(getkey(), (4, 2))
        for name, (got, expected) in check(t, x).items():
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=f"{name} at t={t}")


def test_weights_transfer_and_switch_exactly_at_the_ends():
    lo, hi, g = 0.5, 2.0, 3.0
    iv = sf.Interval(lo, hi, g)
    f = lambda s: float(iv(jnp.asarray(s)))
    assert f(lo) == g and f(hi) == g and f(1.0) == g
    assert f(np.nextafter(lo, 0.0)) == 1.0 and f(np.nextafter(hi, np.inf)) == 1.0
    # sigma/alpha from alpha_sigma: on EDM (sigma = t) the ends are exact times.
    assert float(iv.at_time(EDM, lo)) == g and float(iv.at_time(EDM, np.nextafter(lo, 0.0))) == 1.0
    ramp = sf.Ramp(0.1, 10.0, 1.0, 5.0)
    assert float(ramp(jnp.asarray(0.05))) == 1.0 and float(ramp(jnp.asarray(20.0))) == 5.0
    np.testing.assert_allclose(ramp(jnp.asarray(1.0)), 3.0, rtol=1e-14)  # midpoint in log sigma
    # The same weight on two SDEs at equal log-SNR is the same.
    for t in (0.2, 0.6):
        np.testing.assert_allclose(ramp.at_time(VP, t), ramp.at_log_snr(VP.log_snr(t)), rtol=1e-12)
        t_edm = float(jnp.exp(-0.5 * VP.log_snr(t)))
        np.testing.assert_allclose(ramp.at_time(VP, t), ramp.at_time(EDM, t_edm), rtol=1e-12)
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        sf.Interval(2.0, 1.0, 3.0)
    assert float(sf.Constant(3)(jnp.asarray(0.5))) == 3.0 and float(sf.Interval(1, 2, 3)(jnp.asarray(2.0))) == 3.0


def test_interval_skips_the_reference_outside():
    """Outside the interval the reference is never run (counted at run time; it would return NaN there), inside it
    is run once per call; the guided score switches between main and combination exactly at the ends."""
    lo, hi, g = 0.5, 2.0, 3.0
    main = Shifted(0.5, 0.8, EDM)
    ref = Counted(Shifted(-0.3, 1.0, EDM), lo, hi)
    guided = sf.Guided(main, ref, sf.Interval(lo, hi, g))
    x = jnp.array([0.3, -0.2])
    call = eqx.filter_jit(guided)
    main_at = eqx.filter_jit(main)
    ref_at = eqx.filter_jit(Shifted(-0.3, 1.0, EDM))
    for t in (0.1, np.nextafter(lo, 0.0), np.nextafter(hi, np.inf), 5.0):
        CALLS.clear()
        out = jax.block_until_ready(call(t, x))
        assert not CALLS, f"the reference ran at t={t}, outside the interval"
        np.testing.assert_allclose(out, main_at(t, x), rtol=1e-14)
    for t in (lo, 1.0, hi):
        CALLS.clear()
        out = jax.block_until_ready(call(t, x))
        assert len(CALLS) == 1
        s_m, s_r = main_at(t, x), ref_at(t, x)
        np.testing.assert_allclose(out, s_r + g * (s_m - s_r), rtol=1e-14)
    # Batched t under vmap: the cond becomes a select (both branches run), the answer is still right and finite.
    ts = jnp.array([0.1, lo, 1.0, hi, 5.0])
    xs = jnp.tile(x, (5, 1))
    out = eqx.filter_jit(jax.vmap(guided))(ts, xs)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, jnp.stack([call(t, x) for t in ts]), rtol=1e-14)


def test_cfg_batched_and_two_calls_and_cond_from_call(getkey):
    model = TwoMeans((0.4, -0.8, 0.1), 0.9, VP)  # labels 0, 1; null -1
    weight = sf.Interval(0.3, 3.0, 2.0)
    x = jax.random.normal(getkey(), (4, 2))
    ts = jnp.array([0.05, 0.3, 0.5, 0.9])
    one = sf.ClassifierFreeGuidance(model, 1, -1, weight)
    two = sf.ClassifierFreeGuidance(model, 1, -1, weight, batch=False)
    from_call = sf.ClassifierFreeGuidance(model, None, -1, weight)
    batched = eqx.filter_jit(lambda m, ts, x: jax.vmap(m)(ts, x))
    a = batched(one, ts, x)
    b = batched(two, ts, x)
    c = eqx.filter_jit(jax.vmap(lambda t, xi: from_call(t, xi, jnp.asarray(1))))(ts, x)
    s_c = jax.vmap(lambda t, xi: model(t, xi, 1))(ts, x)
    s_u = jax.vmap(lambda t, xi: model(t, xi, -1))(ts, x)
    alpha, sigma = jax.vmap(VP.alpha_sigma)(ts)
    g = jax.vmap(weight)(sigma / alpha)[:, None]
    d = s_u + g * (s_c - s_u)
    assert np.any(g == 1) and np.any(g != 1)
    np.testing.assert_allclose(a, d, rtol=1e-12)
    np.testing.assert_allclose(b, d, rtol=1e-12)
    np.testing.assert_allclose(c, d, rtol=1e-12)
    # One traced call of the network when batched (an int32 label stacks with the Python-int null), two if not.
    traced = []

    class Traced(sf.AbstractScoreModel):
        model: sf.AbstractScoreModel

        @property
        def sde(self):
            return self.model.sde

        def __call__(self, t, x, cond=None, *, key=None):
            traced.append(cond)
            return self.model(t, x, cond)

    for flag, calls in ((True, 1), (False, 2)):
        traced.clear()
        cfg = sf.ClassifierFreeGuidance(Traced(model), jnp.asarray(1, jnp.int32), -1, sf.Constant(2.0), batch=flag)
        jax.make_jaxpr(lambda xi, cfg=cfg: cfg(0.5, xi))(x[0])
        assert len(traced) == calls, (flag, traced)
    with pytest.raises(ValueError, match="already holds its conditioning"):
        one(0.5, x[0], 0)
    with pytest.raises(ValueError, match="same SDE"):
        sf.Guided(Shifted(0.0, 1.0, VP), Shifted(0.0, 1.0, EDM), sf.Constant(2.0))


def test_cfg_samples_per_example_labels(getkey):
    """`sample` with per-example labels through the call's cond equals the fixed-label wrappers, under jit."""
    model = TwoMeans((0.4, -0.8, 0.1), 0.9, VP)  # labels 0, 1; null -1
    weight = sf.Interval(0.2, 2.0, 2.0)
    sampler = sf.EDMHeun(steps=8)
    x_T = VP.prior_std() * jax.random.normal(getkey(), (4, 2))
    labels = jnp.array([0, 1, 1, 0])
    per_call = sf.ClassifierFreeGuidance(model, None, -1, weight)
    run = eqx.filter_jit(lambda m, c: sf.sample(m, VP, jax.random.key(0), (4, 2), sampler, cond=c, x_T=x_T).samples)
    got = run(per_call, labels)
    for y in (0, 1):
        fixed = sf.ClassifierFreeGuidance(model, jnp.asarray(y), -1, weight)  # traced: one compile
        want = run(fixed, None)
        np.testing.assert_allclose(got[labels == y], want[labels == y], rtol=1e-12)


def test_g4_autoguidance_variance():
    """Autoguidance of N(0, s1^2) by N(0, s2^2) on EDM (sigma = t): the guided score is -x [g/(s1^2 + t^2) -
    (g-1)/(s2^2 + t^2)], so the probability-flow ODE dx/dt = -t s is linear and integrates to
    x_0 = x_T (s1/r1)^g (r2/s2)^(g-1), r_i = sqrt(s_i^2 + T^2). From the prior N(0, T^2) the output variance is
    T^2 (s1/r1)^(2g) (r2/s2)^(2(g-1)), which tends to s1^(2g) s2^(-2(g-1)) as T -> infinity (relative gap 3e-4
    at T = 80 here)."""
    s1, s2, g = 1.0, 1.5, 3.0
    T = EDM.T
    model = sf.Guided(Shifted(0.0, s1, EDM), Shifted(0.0, s2, EDM), sf.Constant(g))
    x_T = jnp.array([[T], [-0.5 * T]])  # the map is linear: x_0 = c x_T
    out = sf.sample(model, EDM, jax.random.key(0), (2, 1), sf.EDMHeun(steps=2000), x_T=x_T).samples
    np.testing.assert_allclose(out[1, 0], -0.5 * out[0, 0], rtol=1e-12)
    var = float(out[0, 0] / T) ** 2 * T**2
    finite_t = T**2 * (s1 / math.hypot(s1, T)) ** (2 * g) * (math.hypot(s2, T) / s2) ** (2 * (g - 1))
    claim = s1 ** (2 * g) * s2 ** (-2 * (g - 1))
    assert abs(var / claim - 1) < 0.01, (var, claim)
    assert abs(var / finite_t - 1) < 1e-4, (var, finite_t)


def test_g4_interval_cfg_mean_shift():
    """Interval CFG of N(mu_c, s^2) against N(mu_u, s^2) on EDM. The guided score is -(x - m)/(s^2 + t^2) with
    m = mu_c outside [lo, hi] and mu_c + (g-1)(mu_c - mu_u) inside; on each piece x - m scales as r(t) =
    sqrt(s^2 + t^2), so from the exact p_T = N(mu_c, r(T)^2) the output is N(mu_c + shift, s^2) with
    shift = (g-1)(mu_c - mu_u)[s/r(lo) - s/r(hi)], exactly for the ODE. Heun's error at the two jumps of g is
    first order (0.49% at 256 steps, 0.14% at 2000)."""
    mu_c, mu_u, s, lo, hi, g = 1.0, -0.5, 0.7, 0.3, 2.0, 3.0
    base = TwoMeans((mu_c, mu_u), s, EDM)
    r_T = math.hypot(s, EDM.T)
    x_T = jnp.array([[mu_c + r_T], [mu_c - r_T]])  # mean and variance of the affine push-forward of N(mu_c, r_T^2)
    stats = {}
    run = eqx.filter_jit(lambda m: sf.sample(m, EDM, jax.random.key(0), (2, 1), sf.EDMHeun(steps=2000), x_T=x_T))
    for gg in (1.0, g):  # an array g: one compilation for both
        model = sf.ClassifierFreeGuidance(base, 0, 1, sf.Interval(lo, hi, jnp.asarray(gg)))
        out = run(model).samples[:, 0]
        stats[gg] = (float(out.mean()), float((out[0] - out[1]) / 2) ** 2)
    shift = (g - 1) * (mu_c - mu_u) * (s / math.hypot(s, lo) - s / math.hypot(s, hi))
    assert abs((stats[g][0] - mu_c) / shift - 1) < 0.01, (stats, shift)
    assert abs(stats[g][1] / s**2 - 1) < 0.01, stats
    np.testing.assert_allclose(stats[1.0], (mu_c, s**2), rtol=1e-4)  # unguided: the truth


def test_log_likelihood_of_guided_model():
    """Constant CFG of N(mu_c, s^2) against N(mu_u, s^2) is exactly the score path of N(mu_g, s^2 + t^2),
    mu_g = mu_u + g (mu_c - mu_u); `log_likelihood` on the wrapper recovers that density, and at x = mu_g it is
    higher than under the unguided conditional model."""
    mu_c, mu_u, s, g = 1.0, -0.5, 0.7, 2.0
    mu_g = mu_u + g * (mu_c - mu_u)
    sde = sf.EDMSDE(sigma_max=20.0)
    base = TwoMeans((mu_c, mu_u), s, sde)

    # One compilation for all three wrappers: array weights of one kind (Interval(0, inf, g) is constant g, and g
    # goes through the lax.cond, a select here, since log_likelihood vmaps one adaptive solve per example) and the
    # same number of points.
    def cfg(lo, hi, gg):
        return sf.ClassifierFreeGuidance(base, 0, 1, sf.Interval(*(jnp.asarray(v) for v in (lo, hi, gg))))

    guided, cond_only = cfg(0.0, math.inf, g), cfg(0.0, math.inf, 1.0)
    x = jnp.array([[mu_g], [mu_c], [mu_c + 0.5 * s]])
    kw = dict(rtol=1e-7, atol=1e-7)
    lp = sf.log_likelihood(guided, sde, x, prior=gauss(mu_g, math.hypot(s, sde.T)), **kw).log_prob
    exact = gauss(mu_g, math.hypot(s, sde.t0)).log_prob(x)
    np.testing.assert_allclose(lp, exact, atol=1e-4)
    lp_cond = sf.log_likelihood(cond_only, sde, x, prior=gauss(mu_c, math.hypot(s, sde.T)), **kw).log_prob
    np.testing.assert_allclose(lp_cond, gauss(mu_c, math.hypot(s, sde.t0)).log_prob(x), atol=1e-4)
    assert lp[0] > lp_cond[0] + 1.0 and lp[1] < lp_cond[1]
    # Interval CFG: the PF-ODE's output is N(mu_c + shift, s^2) exactly (see test_g4_interval_cfg_mean_shift), and
    # the flow's divergence t / (s^2 + t^2) does not depend on the guidance, so the density is that Gaussian's;
    # the adaptive solve steps across the two jumps of g.
    lo, hi = 0.3, 2.0
    shift = (g - 1) * (mu_c - mu_u) * (s / math.hypot(s, lo) - s / math.hypot(s, hi))
    interval = cfg(lo, hi, g)
    xs = jnp.array([[mu_c + shift], [mu_c + shift + 1.5 * s], [mu_c - s]])
    lp_int = sf.log_likelihood(interval, sde, xs, prior=gauss(mu_c, math.hypot(s, sde.T)), **kw).log_prob
    np.testing.assert_allclose(lp_int, gauss(mu_c + shift, math.hypot(s, sde.t0)).log_prob(xs), atol=1e-4)


def test_interval_skips_the_reference_inside_sample():
    """In a fixed-step sampler t is not batched, so the cond stays a branch: the reference runs exactly at the
    times, among those where the main model runs (recorded), that lie inside the interval."""
    times = []

    class Recorded(sf.AbstractScoreModel):
        model: sf.AbstractScoreModel

        @property
        def sde(self):
            return self.model.sde

        def __call__(self, t, x, cond=None, *, key=None):
            jax.debug.callback(lambda tt: times.append(float(tt)), t)
            return self.model(t, x, cond)

    main = Recorded(Shifted(0.5, 0.8, EDM))
    ref = Counted(Shifted(-0.3, 1.0, EDM), 0.0, math.inf)
    n = 4
    x_T = jnp.array([[10.0, -5.0]])
    # array ends: the three intervals share one compilation
    run = eqx.filter_jit(lambda m: sf.sample(m, EDM, jax.random.key(0), (1, 2), sf.EDMHeun(steps=n), x_T=x_T).samples)
    for lo, hi in ((0.0, math.inf), (1e3, 1e4), (1.0, 10.0)):
        CALLS.clear()
        times.clear()
        model = sf.Guided(main, ref, sf.Interval(jnp.asarray(lo), jnp.asarray(hi), 2.0))
        jax.block_until_ready(run(model))
        jax.effects_barrier()
        assert len(times) == 2 * n - 1
        assert len(CALLS) == sum(lo <= t <= hi for t in times), (lo, hi, times, len(CALLS))
        if (lo, hi) == (1.0, 10.0):
            assert 0 < len(CALLS) < len(times)


def test_count_evaluations_per_model():
    """Evaluations per model: the main model runs SampleResult.nfe times per example, the reference only at the
    evaluation times of EDM Heun (the Karras grid, written out here) inside the interval. Constant CFG batched into
    one call counts two evaluations of its network per call, and the counted wrapper returns the same score."""
    main, ref = Shifted(0.5, 0.8, EDM), Shifted(-0.3, 1.0, EDM)
    steps, n, lo, hi = 6, 3, 0.5, 10.0
    sampler = sf.EDMHeun(steps)
    guided = sf.Guided(main, ref, sf.Interval(lo, hi, 2.0))

    def run(m):
        return sf.sample(m, EDM, jax.random.key(0), (n, 2), sampler)

    res, counts = sf.count_evaluations(run, guided)
    smax, smin = EDM.sigma_max ** (1 / 7), EDM.sigma_min ** (1 / 7)
    grid = (smax + np.arange(steps) / (steps - 1) * (smin - smax)) ** 7
    times = np.concatenate([grid, grid[1:]])  # Euler evaluations, then Heun corrections (none after the last)
    inside = int(np.sum((times >= lo) & (times <= hi)))
    assert 0 < inside < len(times)
    assert counts == {"model": n * (2 * steps - 1), "model.main": n * (2 * steps - 1), "model.reference": n * inside}
    assert np.all(np.asarray(res.nfe) == 2 * steps - 1)

    # One call (no sampler, to keep the test cheap): the counted wrapper returns the wrapped model's score.
    cfg = sf.ClassifierFreeGuidance(TwoMeans((0.4, -0.8, 0.1), 0.9, EDM), 0, -1, sf.Constant(2.0))
    x = jnp.array([0.3, -0.2])
    out, counts = sf.count_evaluations(lambda m: m(1.0, x), cfg)
    assert counts == {"model": 1, "model.model": 2}
    np.testing.assert_array_equal(out, cfg(1.0, x))
