"""Samplers against the exact Gaussian-mixture reference (float64): distributions, convergence orders,
per-example / jit / vmap invariance, finiteness at 1 and 2 steps, hooks, NFE accounting, time grids.

Almost all of this file's cost is XLA compilation (every sampler setting and step count is a new program). So
the sampler runs are gathered into two programs, each one `jax.jit` evaluated once by a module-scoped fixture
(`vp_runs`: the distribution runs at n = 4000, whose runs double as convergence, per-example and NFE data,
plus the hooked, per-example and jit/vmap runs; `few_step_runs`: 1 and 2 steps of every sampler on VP, VE and
EDM); the tests assert on their outputs with numpy (an eager JAX op is a compile too). The sampler runs use
`IsotropicMixtureScore`, the test mixture's exact score without Cholesky factorisations."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

import scoreflow as sf

from .helpers import mixture2


def _host(tree):
    """Fixture outputs as numpy arrays: assertions then run no eager JAX ops (each one is a compile)."""
    return jax.tree.map(np.asarray, tree)


VP = sf.VPSDE(sf.LinearSchedule())
VE = sf.VESDE(sigma_min=0.01, sigma_max=50.0)
EDM = sf.EDMSDE()
GMM = mixture2()


class IsotropicMixtureScore(sf.AbstractScoreModel):
    r"""The exact score of a Gaussian mixture whose components are isotropic, $\Sigma_k = c_k I$, under `sde`:
    $p_t = \sum_k w_k N(\alpha\mu_k, v_k I)$ with $v_k = \alpha^2 c_k + \sigma^2$, so
    $\nabla\log p_t(x) = -\sum_k r_k(x)(x - \alpha\mu_k)/v_k$, $r = \mathrm{softmax}_k(\log w_k
    - |x - \alpha\mu_k|^2/(2v_k) - \tfrac d2\log v_k)$. The same function as `sf.AnalyticScore` for such a
    mixture (checked in `test_isotropic_score_is_the_analytic_score`), without its Cholesky factorisations,
    which dominate the run time once `t` is batched inside a vmapped diffrax solve."""

    weights: Float[Array, " k"]
    means: Float[Array, "k d"]
    variances: Float[Array, " k"]
    sde: sf.AbstractSDE

    def __call__(self, t, x, cond=None, *, key=None):
        alpha, sigma = self.sde.alpha_sigma(t)
        v = alpha**2 * self.variances + sigma**2
        diff = x[None] - alpha * self.means
        logits = jnp.log(self.weights) - 0.5 * jnp.sum(diff**2, 1) / v - 0.5 * x.shape[0] * jnp.log(v)
        return -jnp.einsum("k,kd->d", jax.nn.softmax(logits) / v, diff)


def isotropic_score(gmm: sf.GaussianMixture, sde: sf.AbstractSDE) -> IsotropicMixtureScore:
    covs = np.asarray(gmm.covariances)
    c = covs[:, 0, 0]
    assert np.all(covs == c[:, None, None] * np.eye(gmm.dim)[None]), "components must be isotropic"
    return IsotropicMixtureScore(gmm.weights, gmm.means, jnp.asarray(c), sde)


MODEL = isotropic_score(GMM, VP)
ISO = {"vp": MODEL, "ve": isotropic_score(GMM, VE), "edm": isotropic_score(GMM, EDM)}


def test_isotropic_score_is_the_analytic_score():
    """The stand-in model used by the sampler runs is `sf.AnalyticScore` to float64 rounding, for every SDE
    and over the whole time range (noisy and clean ends, modes and tails)."""

    @jax.jit
    def both(key):
        x = jnp.concatenate([GMM.means, 4.0 * jax.random.normal(key, (30, 2))])
        out = []
        for name, sde in (("vp", VP), ("ve", VE), ("edm", EDM)):
            ts = jnp.linspace(sde.t0, sde.T, 7)
            iso, exact = ISO[name], sf.AnalyticScore(GMM, sde)
            out.append(tuple(jax.vmap(lambda t, f=f: jax.vmap(lambda xi: f(t, xi))(x))(ts) for f in (iso, exact)))
        return out

    for iso, exact in _host(both(jax.random.key(0))):
        np.testing.assert_allclose(iso, exact, rtol=1e-10, atol=1e-12 * np.max(np.abs(exact)))


# ---------------------------------------------------------------- time grids and the inverse log-SNR

GRID_SDES = {
    "vp": VP,
    "vp-cos": sf.VPSDE(sf.CosineSchedule()),
    "subvp": sf.SubVPSDE(sf.LinearSchedule()),
    "ve": VE,
    "edm": EDM,
    "vp-learned": sf.VPSDE(sf.LearnedSchedule(hidden=16, key=jax.random.key(3))),
}
DISCRETISATIONS = (
    sf.UniformTime(),
    sf.KarrasTime(rho=7.0),
    sf.LogSNRUniformTime(),
    sf.LogSNRUniformTime(first_step=3.0),
    sf.VPTime(),
)
N_GRID = 12


@pytest.fixture(scope="module")
def grids():
    """For every SDE, in one jit: the log-SNR round trip and the three grids with their log-SNRs."""

    @jax.jit
    def compute():
        out = {}
        for name, sde in GRID_SDES.items():
            lam = jax.vmap(sde.log_snr)
            ts = jnp.linspace(sde.T, sde.t0, 9)
            gs = [d.times(sde, N_GRID, sde.t0) for d in DISCRETISATIONS]
            lams = [lam(g) for g in gs]
            out[name] = dict(ts=ts, back=sf.time_from_log_snr(sde, lam(ts)), grids=gs, lams=lams)
            out[name]["vp_tau"] = sf.time_from_log_snr(VP, lams[-1])  # VPTime's grid in the reference's time
        return out

    return _host(compute())


@pytest.mark.parametrize("name", list(GRID_SDES))
def test_time_grids(name, grids):
    sde, g = GRID_SDES[name], grids[name]
    # inverse log-SNR round trip, to float64 resolution
    np.testing.assert_allclose(g["back"], g["ts"], rtol=1e-9, atol=1e-12 * sde.T)
    for grid in g["grids"]:
        assert grid.shape == (N_GRID + 1,) and grid[0] == sde.T and grid[-1] == sde.t0
        assert np.all(np.diff(grid) < 0)
    # the defining property of each grid: equal spacing in t, in sigma~^(1/rho), in log-SNR
    uniform, karras, logsnr, _, vptime = g["grids"]
    _, lam_karras, lam_logsnr, lam_long_first, _ = g["lams"]
    # VPTime (the samplers' default): uniform t on VP-type SDEs and VE (uniform in log sigma there), else uniform in
    # the time of VPSDE(LinearSchedule)
    if isinstance(sde, sf.VPSDE | sf.SubVPSDE | sf.VESDE):
        np.testing.assert_allclose(vptime, uniform, rtol=0, atol=1e-12)
    else:
        d = np.diff(g["vp_tau"])
        np.testing.assert_allclose(d, d[0], rtol=1e-6)
        assert not np.allclose(vptime, uniform, rtol=0.05)
    d = np.diff(uniform)
    np.testing.assert_allclose(d, d[0], rtol=1e-9)
    d = np.diff(np.exp(-lam_karras / 14))
    np.testing.assert_allclose(d, d[0], rtol=1e-7)
    d = np.diff(lam_logsnr)
    np.testing.assert_allclose(d, d[0], rtol=1e-7)
    # first_step=3: equal log-SNR steps after a first step three times as long, same end points
    d = np.diff(lam_long_first)
    np.testing.assert_allclose(d[1:], d[1], rtol=1e-7)
    np.testing.assert_allclose(d[0], 3.0 * d[1], rtol=1e-7)


def test_sliced_wasserstein_exact():
    key = jax.random.key(1)
    v = np.array([0.5, -1.0, 2.0])

    @jax.jit
    def compute(key_x):
        x = jax.random.normal(key_x, (300, 3))
        sw = lambda y: sf.sliced_wasserstein(x, y, key=key)
        # the directions sliced_wasserstein draws from `key`
        return x, sw(x + v[None]), sw(x[::-1]), jax.random.normal(key, (256, 3))

    x, shifted, reversed_, u = _host(compute(jax.random.key(0)))
    # a constant shift moves every sorted projection by u.v, so SW2^2 = mean_p (u_p . v)^2 exactly
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    np.testing.assert_allclose(shifted, np.sqrt(np.mean((u @ v) ** 2)), rtol=1e-12)
    assert reversed_ < 1e-14  # order does not matter
    with pytest.raises((ValueError, TypeError)):  # TypeError from the runtime shape check when it is on
        sf.sliced_wasserstein(jnp.asarray(x), jnp.asarray(x[:10]), key=key)


# ---------------------------------------------------------------- the VP runs

N_SAMPLES = 4000
# Exact-vs-exact SW2 at n = 4000 on this mixture is 0.03-0.11 over seeds (component-count fluctuation
# dominates); a mixture with weights 0.4/0.6 instead of 0.3/0.7 sits at ~0.3. This check only sees gross errors
# (a 7% noise scale, variance x1.3 or a 0.1 shift pass it): the moment and exact-map tests with the power to
# see 5% errors are in test_sampler_power.py, and tools/mutate.py records which test catches which bug.
SW_TOL = 0.15

SAMPLERS = {
    "pf-tsit5-adaptive": sf.ProbabilityFlow(),
    "pf-heun-40": sf.ProbabilityFlow(diffrax.Heun(), steps=40),
    "pc-revdiff-langevin": sf.PredictorCorrector(sf.ReverseDiffusion(), sf.Langevin(0.16), steps=100),
    "pc-ancestral": sf.PredictorCorrector(sf.Ancestral(), sf.NoCorrector(), steps=100),
    "pc-em": sf.PredictorCorrector(sf.EulerMaruyama(), sf.NoCorrector(), steps=200),
    "rsde-euler": sf.ReverseSDE(diffrax.Euler(), steps=200),
    "rsde-shark": sf.ReverseSDE(diffrax.ShARK(), steps=50),
    "edm-heun": sf.EDMHeun(18),
    "edm-churn": sf.EDMHeun(18, s_churn=10.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003),
    "ddim": sf.DDIM(100),
    "ddim-eta1": sf.DDIM(100, eta=1.0),
    "dpmpp-2m": sf.DPMSolverPP(steps=20),
}

# Convergence orders, once per sampler family: error at t0 for fixed x_T against an adaptive
# rtol = atol = 1e-11 reference, fitted by log-log regression over 3 step counts. One count of each family is
# its distribution run, of which the first N_CONV examples are used (by per-example invariance, the examples
# of a batch of N_CONV with the same key). Theory: probability-flow Heun 2, DDIM 1,
# DPM-Solver++ 2M 2, EDM Heun 2.
N_CONV = 8
ORDERS = {  # name: (sampler of n steps, step counts, theoretical order, the distribution run reused)
    "pf-heun": (lambda n: sf.ProbabilityFlow(diffrax.Heun(), steps=n), (20, 40, 80), 2.0, ("pf-heun-40", 40)),
    "ddim": (lambda n: sf.DDIM(n), (25, 50, 100), 1.0, ("ddim", 100)),
    "dpmpp-2m": (lambda n: sf.DPMSolverPP(steps=n), (20, 40, 80), 2.0, ("dpmpp-2m", 20)),
    "edm-heun": (lambda n: sf.EDMHeun(n), (18, 36, 72), 2.0, ("edm-heun", 18)),
}
for _make, _ns, _, _reuse in ORDERS.values():
    assert _reuse[1] in _ns and eqx.tree_equal(_make(_reuse[1]), SAMPLERS[_reuse[0]])


HOOK_SAMPLERS = (
    sf.PredictorCorrector(sf.Ancestral(), sf.Langevin(), 30),
    sf.ProbabilityFlow(diffrax.Heun(), steps=30),
)
HOOK_X0 = 1.5


def _pin_first_coordinate(t, x):
    """Inpainting by replacement: coordinate 0 pinned to alpha(t) * 1.5."""
    alpha, _ = VP.alpha_sigma(t)
    return x.at[0].set(alpha * HOOK_X0)


PER_EXAMPLE = "ddim-eta1"  # the stochastic sampler whose runs are repeated at batch sizes 1, 7 and 64
JV_SHAPE = (7, 2)
SAMPLE_SEED = 5  # of every VP run but the hooked ones
JV_KEYS = jnp.stack([jax.random.key(SAMPLE_SEED), *jax.random.split(jax.random.key(2), 2)])


_ADAPTIVE_ONE_CALLS = []  # host-side count of the model calls of the adaptive batch-of-one run


def _counted(t, x, cond=None):
    jax.debug.callback(lambda: _ADAPTIVE_ONE_CALLS.append(1))
    return MODEL(t, x, cond)


def _run(model, key, shape, sampler, **kw):
    res = sf.sample(model, VP, key, shape, sampler, **kw)
    return dict(samples=res.samples, nfe=res.nfe, ok=res.successful)


@jax.jit
def _vp_program(k_exact, k_wrong, k_sample, k_sw, k_hook, k_jv):
    """Every VP sampler run of this file, as one program."""
    out = {}
    exact = GMM.sample(seed=k_exact, sample_shape=(N_SAMPLES,))
    wrong = sf.GaussianMixture(jnp.array([0.4, 0.6]), GMM.means, GMM.covariances)
    wrong = wrong.sample(seed=k_wrong, sample_shape=(N_SAMPLES,))
    out["sw_wrong"] = sf.sliced_wasserstein(wrong, exact, key=k_sw)
    # distributions
    out["dist"] = {name: _run(MODEL, k_sample, (N_SAMPLES, 2), s) for name, s in SAMPLERS.items()}
    for r in out["dist"].values():
        r["sw"] = sf.sliced_wasserstein(r["samples"], exact, key=k_sw)
    # per-example invariance: smaller batches with the same key; the batch of 7 is run under a vmap over keys
    # (the first one the same key), which the jit/vmap test compares with eager runs
    pe = SAMPLERS[PER_EXAMPLE]
    out["pe_one"], out["pe_64"] = (_run(MODEL, k_sample, (b, 2), pe)["samples"] for b in (1, 64))
    out["jv"] = jax.vmap(lambda k: sf.sample(MODEL, VP, k, JV_SHAPE, pe).samples)(k_jv)
    out["adaptive_one"] = _run(_counted, k_sample, (1, 2), SAMPLERS["pf-tsit5-adaptive"])
    # convergence orders
    tight = sf.ProbabilityFlow(rtol=1e-11, atol=1e-11, max_steps=100_000)
    ref = _run(MODEL, k_sample, (N_CONV, 2), tight)["samples"]
    out["conv_ref"] = ref
    out["conv_ref_denoised"] = jax.vmap(lambda x: MODEL.denoise(VP.t0, x))(ref)  # EDM ends on D
    out["conv"] = {
        name: [
            out["dist"][reuse[0]]["samples"][:N_CONV]
            if n == reuse[1]
            else _run(MODEL, k_sample, (N_CONV, 2), make(n))["samples"]
            for n in ns
        ]
        for name, (make, ns, _, reuse) in ORDERS.items()
    }
    # hook (at the batch size of the distribution runs: shared kernels compile faster)
    out["hook"] = [_run(MODEL, k_hook, (N_SAMPLES, 2), s, hook=_pin_first_coordinate)["samples"] for s in HOOK_SAMPLERS]
    out["alpha_t0"] = VP.alpha_sigma(VP.t0)[0]
    return out


VP_KEYS = [jax.random.key(i) for i in (1234, 5, SAMPLE_SEED, 9, 3)] + [JV_KEYS]


@pytest.fixture(scope="module")
def vp_runs():
    _ADAPTIVE_ONE_CALLS.clear()
    out = _host(_vp_program(*VP_KEYS))
    jax.effects_barrier()
    out["adaptive_one_calls"] = len(_ADAPTIVE_ONE_CALLS)
    return out


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samples_match_mixture(name, vp_runs):
    r = vp_runs["dist"][name]
    assert np.all(r["ok"]) and np.all(np.isfinite(r["samples"]))
    assert r["sw"] < SW_TOL, (name, r["sw"])


def test_sliced_wasserstein_detects_wrong_mixture(vp_runs):
    assert vp_runs["sw_wrong"] > 2 * SW_TOL


# ---------------------------------------------------------------- convergence orders


def _slope(ns, errs):
    return np.polyfit(np.log(ns), np.log(errs), 1)[0]


@pytest.mark.parametrize("name", list(ORDERS))
def test_convergence_order(name, vp_runs):
    make, ns, order, _ = ORDERS[name]
    target = vp_runs["conv_ref_denoised" if name == "edm-heun" else "conv_ref"]
    errs = [np.max(np.abs(x - target)) for x in vp_runs["conv"][name]]
    slope = _slope(ns, errs)
    assert abs(-slope - order) < 0.3, (make(ns[0]), errs, slope)


# ---------------------------------------------------------------- invariances


def test_per_example_invariance(vp_runs):
    """Example i's sample depends only on (key, i): identical for batch sizes 1, 7, 64 and 4000."""
    one, seven, many = vp_runs["pe_one"], vp_runs["jv"][0], vp_runs["pe_64"]
    full = vp_runs["dist"][PER_EXAMPLE]["samples"]
    np.testing.assert_allclose(seven[:1], one, rtol=0, atol=1e-12)
    np.testing.assert_allclose(many[:7], seven, rtol=0, atol=1e-12)
    np.testing.assert_allclose(full[:64], many, rtol=0, atol=1e-12)
    # adaptive steps are chosen per example too
    a, b = vp_runs["adaptive_one"], vp_runs["dist"]["pf-tsit5-adaptive"]
    np.testing.assert_allclose(b["samples"][:1], a["samples"], rtol=0, atol=1e-12)
    assert a["nfe"][0] == b["nfe"][0] and len(set(b["nfe"].tolist())) > 1


def test_jit_vmap_invariance(vp_runs):
    """`sample` under jit and a vmap over keys gives the eager results."""
    eager = [sf.sample(MODEL, VP, k, JV_SHAPE, SAMPLERS[PER_EXAMPLE]).samples for k in JV_KEYS]
    np.testing.assert_allclose(vp_runs["jv"], np.stack(eager), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- 1-step / 2-step finiteness

FEW_STEP_SAMPLERS = {
    "pf-tsit5": lambda n: sf.ProbabilityFlow(steps=n),
    "pc-em-langevin": lambda n: sf.PredictorCorrector(sf.EulerMaruyama(), sf.Langevin(), n),
    "pc-revdiff-langevin2": lambda n: sf.PredictorCorrector(sf.ReverseDiffusion(), sf.Langevin(n_steps=2), n),
    "pc-ancestral": lambda n: sf.PredictorCorrector(sf.Ancestral(), sf.NoCorrector(), n),
    "rsde-heun": lambda n: sf.ReverseSDE(diffrax.Heun(), steps=n),
    "edm-churn": lambda n: sf.EDMHeun(n, s_churn=40.0),
    "ddim-eta0.5": lambda n: sf.DDIM(n, eta=0.5),
    "dpmpp-2m": lambda n: sf.DPMSolverPP(steps=n),
}
FEW_STEP_SDES = {"vp": VP, "ve": VE, "edm": EDM}
FEW_STEP_BATCH = 8
# Whether a run of 1 or 2 steps stays finite does not depend on the data, so these use the cheapest exact
# model: one isotropic Gaussian component N((1.5, 1), 0.5 I), the closed form above with k = 1.
GAUSSIAN = {
    name: IsotropicMixtureScore(
        jnp.asarray(np.ones(1)), jnp.asarray(np.asarray(GMM.means)[1:]), jnp.asarray(np.array([0.5])), sde
    )
    for name, sde in FEW_STEP_SDES.items()
}


@jax.jit
def _few_step_program(key):
    """Every sampler with 1 and 2 steps on VP, VE and EDM, as one program."""
    out = {}
    for sde_name, sde in FEW_STEP_SDES.items():
        out[sde_name, "prior_std"] = sde.prior_std()
        for name, make in FEW_STEP_SAMPLERS.items():
            for n in (1, 2):
                res = sf.sample(GAUSSIAN[sde_name], sde, key, (FEW_STEP_BATCH, 2), make(n))
                out[sde_name, name, n] = (res.samples, res.nfe)
    return out


@pytest.fixture(scope="module")
def few_step_runs():
    return _host(_few_step_program(jax.random.key(4)))


@pytest.mark.parametrize("sde_name", list(FEW_STEP_SDES))
def test_one_and_two_steps_finite(sde_name, few_step_runs):
    for name in FEW_STEP_SAMPLERS:
        for n in (1, 2):
            assert np.all(np.isfinite(few_step_runs[sde_name, name, n][0])), (name, n)
    # the deterministic 2-step exponential integrators already land near the data
    prior_scale = 4 * few_step_runs[sde_name, "prior_std"] + 10
    assert np.max(np.abs(few_step_runs[sde_name, "dpmpp-2m", 2][0])) < prior_scale


# ---------------------------------------------------------------- hook, NFE, Langevin step


def test_hook_applied_after_every_step(vp_runs):
    """Inpainting by replacement: the hook pins coordinate 0 to alpha(t) * 1.5 after every step; the final
    sample carries the pinned value and the free coordinate follows the conditional of the mixture."""
    for x in vp_runs["hook"]:
        np.testing.assert_allclose(x[:, 0], vp_runs["alpha_t0"] * HOOK_X0, rtol=1e-12)
        # x0 = 1.5 makes the second component (mean 1.5, 1.0) overwhelmingly likely: x1 ~ N(1, 0.5) roughly
        assert abs(np.mean(x[:, 1]) - 1.0) < 0.2
    with pytest.raises(ValueError, match="fixed-step"):
        sf.sample(MODEL, VP, jax.random.key(0), (2, 2), sf.ProbabilityFlow(), hook=_pin_first_coordinate)


def test_nfe_accounting(vp_runs, few_step_runs):
    """EDM Heun with N levels costs 2N - 1; fixed-step Tsit5 1 + 6 per step (first same as last); a
    predictor-corrector step 1 + corrector.n_steps; the same for every example. Adaptive: the reported
    count is the number of model calls (counted with a host callback on a batch of one)."""
    assert vp_runs["dist"]["edm-heun"]["nfe"].tolist() == [2 * 18 - 1] * N_SAMPLES
    assert vp_runs["dist"]["pc-revdiff-langevin"]["nfe"].tolist() == [100 * 2] * N_SAMPLES
    for sde_name in FEW_STEP_SDES:
        for n in (1, 2):
            expected = {"edm-churn": 2 * n - 1, "pf-tsit5": 1 + 6 * n, "pc-revdiff-langevin2": 3 * n}
            for name, count in expected.items():
                assert few_step_runs[sde_name, name, n][1].tolist() == [count] * FEW_STEP_BATCH, name
    assert vp_runs["adaptive_one"]["nfe"][0] == vp_runs["adaptive_one_calls"]


def test_langevin_leaves_marginal_invariant():
    """Corrector-only chain at fixed t started at exact p_t samples: 50 steps keep p_t's mean and covariance
    (exact, from the mixture) within sampling error, and the step is state-independent (finite at a mode)."""
    lang = sf.Langevin(snr=0.16)
    t = 0.3
    pt = sf.marginal(GMM, VP, t)
    model = sf.AnalyticScore(GMM, VP)

    @jax.jit
    def chain(key_x, key):
        x = pt.sample(seed=key_x, sample_shape=(N_SAMPLES,))

        def body(x, k):
            ks = jax.random.split(k, x.shape[0])
            step = lambda xi, ki: lang.step(lambda tt, y: model(tt, y), VP, t, xi, ki)
            return jax.vmap(step)(x, ks), None

        y = jax.lax.scan(body, x, jax.random.split(key, 50))[0]
        return x, y, pt.mean(), pt.covariance(), lang.step_size(jnp.asarray(0.3))

    x, y, mean, cov, step_size = _host(chain(jax.random.key(1), jax.random.key(2)))
    np.testing.assert_allclose(step_size, 2 * 0.16**2 * 0.09, rtol=1e-14)
    assert np.max(np.abs(y - x)) > 0.1  # it moved
    se_mean = np.sqrt(np.diagonal(cov) / N_SAMPLES)
    assert np.all(np.abs(np.mean(y, 0) - mean) < 4 * se_mean)
    # sample covariance within 4 standard errors (sqrt(2/n) relative on the diagonal) plus ULA's O(eps) bias
    np.testing.assert_allclose(np.diagonal(np.cov(y.T)), np.diagonal(cov), rtol=4 * (2 / N_SAMPLES) ** 0.5 + 0.02)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="steps"):
        sf.DDIM(0)
    with pytest.raises(TypeError, match="solver"):
        sf.ProbabilityFlow(solver=diffrax.Kvaerno5())
    with pytest.raises(ValueError, match="t0"):
        sf.sample(sf.AnalyticScore(GMM, VP), VP, jax.random.key(0), (2, 2), sf.DDIM(3), t0=1.5)
    with pytest.raises(ValueError, match="shape"):
        sf.sample(sf.AnalyticScore(GMM, VP), VP, jax.random.key(0), (2,), sf.DDIM(3))
