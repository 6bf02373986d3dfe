"""Failures are loud (issue 9, "silent wrong answers"): bad inputs raise naming the argument, the value and what
was expected; failed examples raise with `throw=True` and are reported per example with `throw=False`.

The model is the exact score of N(0, I) data, -x / (alpha^2 + sigma^2): under a VP SDE the marginals stay
N(0, I), the probability-flow drift is zero and the ODE maps x_T to itself, which gives exact numbers to check.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest

import scoreflow as sf


VP = sf.VPSDE(sf.LinearSchedule())
KEY = jax.random.key(0)
X_T = jnp.array([[0.1, 0.2], [jnp.nan, 0.0], [jnp.inf, 1.0], [-0.4, 0.3]])
R = diffrax.RESULTS


class GaussianScore(sf.AbstractScoreModel):
    """The exact score of N(0, I) data, made NaN wherever x[0] > `nan_above` (so that only the example started
    there fails)."""

    sde: sf.AbstractSDE
    nan_above: float = math.inf

    def __call__(self, t, x, cond=None, *, key=None):
        alpha, sigma = self.sde.alpha_sigma(t)
        return jnp.where(x[0] > self.nan_above, jnp.nan, -x / (alpha**2 + sigma**2))


MODEL = GaussianScore(VP)
nan_when_large = GaussianScore(VP, nan_above=5.0)


X_LARGE = jnp.array([[0.1, 0.2], [10.0, 0.0], [-0.4, 0.3]])


@pytest.fixture
def library_checks():
    """Switch off the test run's jaxtyping/beartype hook, so that a wrongly typed argument reaches the library's
    own check: the message a user (who runs without the hook) sees."""
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


def status(res, item):
    return np.asarray(res.result == item)


# ---------------------------------------------------------------------------------------------------------------
# sample: non-finite x_T


def test_nonfinite_x_T_raises_naming_the_examples():
    with pytest.raises(ValueError, match=r"`x_T` has non-finite values \(NaN or inf\) in 2 of 4 examples \(1 and 2\)"):
        sf.sample(MODEL, VP, KEY, (4, 2), sf.DDIM(2), x_T=X_T)


@pytest.mark.parametrize("sampler", [sf.ProbabilityFlow(), sf.DDIM(2)], ids=["adaptive", "ddim"])
def test_nonfinite_x_T_reported_per_example(sampler):
    res = sf.sample(MODEL, VP, KEY, (4, 2), sampler, x_T=X_T, throw=False)
    np.testing.assert_array_equal(res.successful, [True, False, False, True])
    np.testing.assert_array_equal(status(res, R.nonfinite_input), [False, True, True, False])
    # the failed examples return their start; the others are unaffected by their batch-mates
    np.testing.assert_array_equal(res.samples[1:3], X_T[1:3])
    clean = sf.sample(MODEL, VP, KEY, (2, 2), sampler, x_T=X_T[jnp.array([0, 3])])
    np.testing.assert_allclose(res.samples[jnp.array([0, 3])], clean.samples, rtol=0, atol=1e-12)
    if isinstance(sampler, sf.ProbabilityFlow):  # the exact ODE maps x_T to itself here
        np.testing.assert_allclose(clean.samples, X_T[jnp.array([0, 3])], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# sample: a model that returns NaN; an SDE with infinite coefficients


def test_nan_model_raises_naming_the_example():
    with pytest.raises(RuntimeError, match=r"example 1 of 3: the sample has non-finite values \(NaN or inf\)"):
        sf.sample(nan_when_large, VP, KEY, (3, 2), sf.DDIM(2), x_T=X_LARGE)


def test_nan_model_reported_per_example():
    res = sf.sample(nan_when_large, VP, KEY, (3, 2), sf.DDIM(2), x_T=X_LARGE, throw=False)
    np.testing.assert_array_equal(res.successful, [True, False, True])
    np.testing.assert_array_equal(status(res, R.nonfinite), [False, True, False])
    assert np.all(np.isfinite(res.samples[jnp.array([0, 2])])) and np.all(np.isnan(res.samples[1]))


def test_infinite_sde_raises_naming_sde():
    sde = sf.VPSDE(sf.LinearSchedule(beta_max=math.inf))
    with pytest.raises(ValueError, match=r"`sde` has non-finite coefficients: g\(1e-05\) = nan.*beta_max=inf"):
        sf.sample(GaussianScore(sde), sde, KEY, (3, 2), sf.DDIM(2))
    res = sf.sample(GaussianScore(sde), sde, KEY, (3, 2), sf.DDIM(2), throw=False)
    np.testing.assert_array_equal(status(res, R.nonfinite), [True, True, True])
    assert not np.any(res.successful)


# ---------------------------------------------------------------------------------------------------------------
# sample: an adaptive solve that runs out of steps


def test_max_steps_raises_and_is_reported():
    sampler = sf.ProbabilityFlow(max_steps=2)
    with pytest.raises(RuntimeError, match=r"3 of 3 examples \(0, 1 and 2\): the adaptive solve used all max_steps=2"):
        sf.sample(MODEL, VP, KEY, (3, 2), sampler)
    res = sf.sample(MODEL, VP, KEY, (3, 2), sampler, throw=False)
    np.testing.assert_array_equal(status(res, R.max_steps_reached), [True, True, True])
    assert not np.any(res.successful)
    # with a budget the good examples finish in (the zero drift takes a few growing steps), only the example
    # whose model output is NaN (every step rejected) runs out, and the others are exact
    res = sf.sample(nan_when_large, VP, KEY, (3, 2), sf.ProbabilityFlow(max_steps=16), x_T=X_LARGE, throw=False)
    np.testing.assert_array_equal(status(res, R.max_steps_reached), [False, True, False])
    np.testing.assert_array_equal(res.successful, [True, False, True])
    np.testing.assert_allclose(res.samples[jnp.array([0, 2])], X_LARGE[jnp.array([0, 2])], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# sample under jit: the same checks through eqx.error_if (static messages: the reason, not the examples)


def test_failures_under_jit():
    run = eqx.filter_jit(
        lambda x_T, throw: sf.sample(nan_when_large, VP, KEY, (3, 2), sf.DDIM(2), x_T=x_T, throw=throw)
    )
    with pytest.raises(RuntimeError, match="at least one example failed: the sample has non-finite values"):
        run(X_LARGE, True)
    with pytest.raises(RuntimeError, match="at least one example failed: the start x_T has non-finite values"):
        run(X_T[:3], True)
    res = run(X_LARGE, False)
    np.testing.assert_array_equal(status(res, R.nonfinite), [False, True, False])


# ---------------------------------------------------------------------------------------------------------------
# sample: argument checks


@pytest.mark.parametrize(
    "make",
    [
        lambda: sf.DDIM(steps=2.5),
        lambda: sf.DPMSolverPP(steps=2.5),
        lambda: sf.EDMHeun(steps=2.5),
        lambda: sf.PredictorCorrector(steps=2.5),
        lambda: sf.ReverseSDE(steps=2.5),
        lambda: sf.ProbabilityFlow(steps=2.5),
    ],
    ids=["DDIM", "DPMSolverPP", "EDMHeun", "PredictorCorrector", "ReverseSDE", "ProbabilityFlow"],
)
def test_non_integer_steps_raise(library_checks, make):
    with pytest.raises(TypeError, match=r"needs `steps` to be an integer >= 1.*; got steps=2\.5 \(float\)"):
        make()


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: sf.DDIM(steps=0), ValueError, r"DDIM needs `steps` to be an integer >= 1; got steps=0"),
        (lambda: sf.DDIM(steps=True), TypeError, r"`steps` to be an integer >= 1; got steps=True \(bool\)"),
        (
            lambda: sf.DDIM(eta=1.5),
            ValueError,
            r"`eta` to be a finite number in \[0\.0, 1\.0\]; got eta=1\.5",
        ),
        (lambda: sf.DDIM(eta=math.nan), ValueError, r"`eta`.*got eta=nan"),
        (
            lambda: sf.DDIM(discretisation="uniform"),
            TypeError,
            r"`discretisation` to be a time grid.*'uniform'",
        ),
        (lambda: sf.DPMSolverPP(order=4), ValueError, r"`order` to be an integer >= 1 and <= 3; got order=4"),
        (lambda: sf.DPMSolverPP(order=2.0), TypeError, r"`order`.*got order=2\.0 \(float\)"),
        (lambda: sf.DPMSolverPP(final_step_to_zero=1), TypeError, r"`final_step_to_zero` to be True or False"),
        (
            lambda: sf.DPMSolverPP(denoise_level=0.0),
            ValueError,
            r"`denoise_level`.*\(0\.0, inf\]; got .*=0\.0",
        ),
        (lambda: sf.EDMHeun(rho=-1.0), ValueError, r"EDMHeun needs `rho`.*got rho=-1\.0"),
        (lambda: sf.EDMHeun(s_churn=math.inf), ValueError, r"`s_churn` to be a finite number.*got s_churn=inf"),
        (lambda: sf.EDMHeun(s_tmax=math.nan), ValueError, r"`s_tmax`.*got s_tmax=nan"),
        (lambda: sf.Langevin(snr=0.0), ValueError, r"Langevin needs `snr`.*got snr=0\.0"),
        (lambda: sf.Langevin(n_steps=1.5), TypeError, r"`n_steps` to be an integer >= 1 \(NoCorrector\(\) for none\)"),
        (lambda: sf.PredictorCorrector(predictor=sf.Langevin()), TypeError, r"`predictor` to be a predictor"),
        (lambda: sf.PredictorCorrector(corrector=sf.Ancestral()), TypeError, r"`corrector` to be a corrector"),
        (lambda: sf.ProbabilityFlow(rtol=0.0), ValueError, r"`rtol`.*got rtol=0\.0"),
        (lambda: sf.ProbabilityFlow(max_steps=100.0), TypeError, r"`max_steps`.*got max_steps=100\.0 \(float\)"),
        (lambda: sf.KarrasTime(rho=0.0), ValueError, r"KarrasTime needs `rho`.*got rho=0\.0"),
        (
            lambda: sf.LogSNRUniformTime(first_step="3"),
            TypeError,
            r"`first_step` to be a real number; got .*='3'",
        ),
    ],
)
def test_sampler_arguments_are_checked(library_checks, make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_python_int_key_raises(library_checks):
    with pytest.raises(
        TypeError, match=r"`key` must be a JAX PRNG key from jax\.random\.key\(seed\).*got key=0 \(int\)"
    ):
        sf.sample(MODEL, VP, 0, (3, 2), sf.DDIM(2))
    with pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key.*got a float64 array of shape \(2,\)"):
        sf.sample(MODEL, VP, jnp.zeros(2), (3, 2), sf.DDIM(2))


def test_uint32_key_data_still_works():
    legacy = sf.sample(MODEL, VP, jax.random.PRNGKey(0), (3, 2), sf.DDIM(2))
    typed = sf.sample(MODEL, VP, jax.random.wrap_key_data(jax.random.PRNGKey(0)), (3, 2), sf.DDIM(2))
    np.testing.assert_array_equal(legacy.samples, typed.samples)


def test_low_precision_x_T_is_converted():
    x_T = jnp.array([[0.5, -1.0], [2.0, 0.25]])  # exactly representable in float16
    half = sf.sample(MODEL, VP, KEY, (2, 2), sf.DDIM(2), x_T=x_T.astype(jnp.float16))
    full = sf.sample(MODEL, VP, KEY, (2, 2), sf.DDIM(2), x_T=x_T)
    assert half.samples.dtype == jnp.float64
    np.testing.assert_array_equal(half.samples, full.samples)


def test_other_sample_arguments(library_checks):
    with pytest.raises(TypeError, match=r"`x_T` must be a floating-point array; got dtype int32"):
        sf.sample(MODEL, VP, KEY, (2, 2), sf.DDIM(2), x_T=jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(TypeError, match=r"`throw` must be True or False; got throw='yes'"):
        sf.sample(MODEL, VP, KEY, (2, 2), sf.DDIM(2), throw="yes")
    with pytest.raises(TypeError, match=r"`sde` must be an AbstractSDE"):
        sf.sample(MODEL, "vp", KEY, (2, 2), sf.DDIM(2))
    with pytest.raises(ValueError, match=r"`model\(t, x, cond\)` must return the score of one example, an array of "):
        sf.sample(lambda t, x, c: jnp.sum(x), VP, KEY, (2, 2), sf.DDIM(2))


# ---------------------------------------------------------------------------------------------------------------
# log_likelihood and bits_per_dim


def test_log_likelihood_nonfinite_x_names_x():
    x = jnp.array([[0.1, 0.2], [jnp.nan, 0.0], [0.3, -0.1]])
    with pytest.raises(ValueError, match=r"`x` has non-finite values \(NaN or inf\) in example 1 of 3"):
        sf.log_likelihood(MODEL, VP, x)
    with pytest.raises(RuntimeError, match=r"`x` has non-finite values \(NaN or inf\) in at least one example"):
        eqx.filter_jit(lambda x: sf.log_likelihood(MODEL, VP, x).log_prob)(x)


def test_log_likelihood_rejects_integer_x(library_checks):
    with pytest.raises(TypeError, match=r"`x` must be a floating-point array.*got dtype uint8.*bits_per_dim"):
        sf.log_likelihood(MODEL, VP, jnp.zeros((2, 2), jnp.uint8))


def test_log_likelihood_failed_solve_names_the_example():
    x = jnp.array([[0.1, 0.2], [10.0, 0.0], [0.3, -0.1]])
    with pytest.raises(RuntimeError, match=r"example 1 of 3: the ODE solve used its whole step budget, max_steps=16"):
        sf.log_likelihood(nan_when_large, VP, x, max_steps=16)


def _density(x, key):
    return -0.5 * jnp.sum(x**2, axis=1) - x.shape[1] * 0.5 * math.log(2 * math.pi)


def test_bits_per_dim_inputs(library_checks):
    data = jnp.array([[0, 3], [5, 1], [2, -1]])
    with pytest.raises(ValueError, match=r"`data` must hold integer levels in \[0, num_levels\) = \[0, 4\); got "):
        sf.bits_per_dim(_density, data, num_levels=4, key=KEY)
    with pytest.raises(ValueError, match=r"levels outside it in 2 of 3 examples \(1 and 2\)"):
        sf.bits_per_dim(_density, data, num_levels=4, key=KEY)
    good = jnp.array([[0, 3], [1, 1]])
    with pytest.raises(TypeError, match=r"`key` must be a JAX PRNG key.*got key=0 \(int\)"):
        sf.bits_per_dim(_density, good, num_levels=4, key=0)
    with pytest.raises(TypeError, match=r"`num_levels` to be an integer >= 2; got num_levels=True \(bool\)"):
        sf.bits_per_dim(_density, good, num_levels=True, key=KEY)
    with pytest.raises(TypeError, match=r"`data` must hold integer levels.*got dtype float64.*astype"):
        sf.bits_per_dim(_density, good.astype(float), num_levels=4, key=KEY)
    with pytest.raises(ValueError, match=r"`log_density\(x, key\)` must return .* shape \(2,\).*shape \(2, 1\)"):
        sf.bits_per_dim(lambda x, k: _density(x, k)[:, None], good, num_levels=4, key=KEY)
    nan_first = lambda x, k: jnp.where(jnp.arange(x.shape[0]) == 0, jnp.nan, _density(x, k))
    with pytest.raises(RuntimeError, match=r"bound is not finite for example 0 of 2"):
        sf.bits_per_dim(nan_first, good, num_levels=4, key=KEY)
    # the valid call gives the analytic bound: x = -1 + (k + u) / 2, E[x^2] over the bin [a, a + 1/2]
    res = sf.bits_per_dim(_density, good, num_levels=4, key=KEY, dequantisation=sf.UniformDequantisation(64))
    a = -1.0 + 0.5 * np.asarray(good, float)
    ex2 = (a**2 + a * (a + 0.5) + (a + 0.5) ** 2) / 3
    bound = np.sum(-0.5 * ex2 - 0.5 * math.log(2 * math.pi), axis=1) + 2 * math.log(0.5)
    np.testing.assert_allclose(res.bits_per_dim, -bound / (2 * math.log(2)), atol=4 * float(np.max(res.stderr)))
