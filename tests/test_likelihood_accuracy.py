"""The default `log_likelihood`'s accuracy guarantee (issue 14, P1), on closed-form mixtures.

Documented in docs/likelihood.md: with the default error control and rtol = atol = tol, the log-density of every
example is within `bound(tol)` = 150 tol + 2e-5 nats of the exact one. Checked at three tolerances on a VP and an
EDM problem (float32, as users run it), with the exact prior p_T so that only the solver's error is measured. The
bound is tight enough that a 5% error in the model's noise level breaks it (about 1.4 nats against 0.015 at the
loosest tolerance; checked in the same test), so the test can fail. Each problem compiles one solve; the three
tolerances and the buggy model reuse it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf

from .helpers import mixture_full


TOLS = (1e-4, 1e-5, 1e-6)
N = 64


def bound(tol: float) -> float:
    """The documented guarantee: max |error| <= 150 tol + 2e-5 nats (the constant is float32 round-off).
    Measured here: 9-72 tol; on the 1000-point benchmark mixtures (2-d, 64-d) at tol = 1e-5: 28-79 tol."""
    return 150.0 * tol + 2e-5


class _NoiseScaled(sf.AbstractScoreModel):
    """The exact score of the mixture perturbed to N(alpha mu_k, alpha^2 Sigma_k + (scale sigma)^2 I): with
    `scale = 1` the exact model, with `scale = 1.05` a 5% error in the noise level. `scale` is an array, so both
    share one compiled solve."""

    mixture: sf.GaussianMixture
    sde: sf.AbstractSDE
    scale: jax.Array

    def __call__(self, t, x, cond=None, *, key=None):
        alpha, sigma = self.sde.alpha_sigma(t)
        m = self.mixture
        eye = jnp.eye(m.dim, dtype=x.dtype)
        noisy = sf.GaussianMixture(
            m.weights, alpha * m.means, alpha**2 * m.covariances + (self.scale * sigma) ** 2 * eye[None]
        )
        return noisy.score(x)


PROBLEMS = {
    "vp": lambda: sf.VPSDE(sf.LinearSchedule()),
    "edm": lambda: sf.EDMSDE(sigma_min=0.002, sigma_max=80.0),
}


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_default_error_control_meets_its_bound(name):
    sde = PROBLEMS[name]()
    ref = mixture_full(jax.random.key(3), k=3, d=4)
    parts = [a.astype(jnp.float32) for a in (ref.weights, ref.means, ref.covariances)]
    gmm = sf.GaussianMixture(*parts)  # what the model uses (float32)
    gmm64 = sf.GaussianMixture(*(a.astype(jnp.float64) for a in parts))  # the same mixture, for the truth
    x = sf.marginal(gmm, sde, sde.t0).sample(seed=jax.random.key(1), sample_shape=(N,))
    truth = np.asarray(sf.marginal(gmm64, sde, sde.t0).log_prob(x.astype(jnp.float64)))
    prior = sf.marginal(gmm, sde, sde.T)
    errors = []
    for tol in TOLS:
        model = _NoiseScaled(gmm, sde, jnp.asarray(1.0, jnp.float32))
        res = sf.log_likelihood(model, sde, x, rtol=tol, atol=tol, prior=prior)
        err = float(np.max(np.abs(np.asarray(res.log_prob, np.float64) - truth)))
        assert err <= bound(tol), (name, tol, err, bound(tol))
        errors.append(err)
    assert errors[-1] < errors[0], errors  # tightening the tolerance buys accuracy
    # the test can fail: a 5% error in the model's noise level (about 1.4 nats here) breaks the bound
    bug = _NoiseScaled(gmm, sde, jnp.asarray(1.05, jnp.float32))
    res = sf.log_likelihood(bug, sde, x, rtol=TOLS[0], atol=TOLS[0], prior=prior)
    err = float(np.max(np.abs(np.asarray(res.log_prob, np.float64) - truth)))
    assert err > 10 * bound(TOLS[0]), err


def test_nats_norm_values():
    """2-norm over the state's scaled error; the log-density's error (arriving scaled by K = 2^-16 and divided by
    atol + rtol K |delta| ~ atol) weighted by w / K, i.e. an absolute tolerance of atol / w nats."""
    k = sf.NatsNorm.density_scale
    assert k == 2.0**-16
    e_y = jnp.array([3.0, -4.0])
    assert float(sf.NatsNorm()((e_y, jnp.zeros(1)))) == pytest.approx(5.0)  # not the RMS, 3.54
    assert float(sf.NatsNorm(0.3)((e_y, jnp.array([100.0 * k])))) == pytest.approx(30.0)
    assert float(sf.NatsNorm(0.0)((e_y, jnp.array([1e6])))) == pytest.approx(5.0)
    assert sf.StateDensityNorm.density_scale == sf.AugmentedRMSNorm.density_scale == 1.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="density_weight"):
            sf.NatsNorm(bad)
