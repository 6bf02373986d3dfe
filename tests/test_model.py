import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf

from .helpers import mixture2, sde_ids, sdes


PARAMS = [sf.EpsPrediction(), sf.X0Prediction(), sf.VPrediction(), sf.ScorePrediction(), sf.EDMPreconditioning(0.5)]
PARAM_IDS = ["eps", "x0", "v", "score", "edm"]


@pytest.mark.parametrize("param", PARAMS, ids=PARAM_IDS)
@pytest.mark.parametrize("sde", sdes(), ids=sde_ids())
def test_scalings_consistent(param, sde, getkey):
    # score = s_x x + s_F F must equal (alpha D - x) / sigma^2 with D = c_skip x + c_out F.
    for frac in (0.01, 0.3, 0.9):
        t = sde.t0 + frac * (sde.T - sde.t0)
        a, s = sde.alpha_sigma(t)
        sc = param.scalings(a, s, sde.log_snr(t))
        x, f = jax.random.normal(getkey(), (2, 5))
        d = sc.c_skip * x + sc.c_out * f
        np.testing.assert_allclose(sc.s_x * x + sc.s_F * f, (a * d - x) / s**2, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(sc.c_noise, -sde.log_snr(t) / 8, rtol=1e-12)


@pytest.mark.parametrize("sde", sdes(), ids=sde_ids())
def test_each_parameterisation_reproduces_the_exact_score(sde, getkey):
    # A "network" that outputs the exact target of its parameterisation gives back the exact score.
    gmm = mixture2()
    exact = sf.AnalyticScore(gmm, sde)
    t = sde.t0 + 0.37 * (sde.T - sde.t0)
    a, s = sde.alpha_sigma(t)
    x = sf.marginal(gmm, sde, t).sample(seed=getkey(), sample_shape=(4,))
    for param, target in zip(
        PARAMS,
        [
            lambda xi: exact.eps(t, xi),
            lambda xi: exact.denoise(t, xi),
            lambda xi: exact.v(t, xi),
            lambda xi: exact(t, xi),
            None,
        ], strict=False,
    ):
        if target is None:  # EDM: F = (D - c_skip x) / c_out
            sc = param.scalings(a, s, sde.log_snr(t))
            target = lambda xi, sc=sc: (exact.denoise(t, xi) - sc.c_skip * xi) / sc.c_out  # noqa: E731
        tgt = target

        def net(c_noise, x_in, cond, *, key=None, tgt=tgt, param=param):
            sc = param.scalings(a, s, sde.log_snr(t))
            return tgt(x_in / sc.c_in)

        model = sf.ScoreModel(net, sde, param)
        got = jax.vmap(lambda xi, model=model: model(t, xi))(x)
        want = jax.vmap(lambda xi: exact(t, xi))(x)
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7 / float(s))


def test_conversions_round_trip(getkey):
    sde = sf.VPSDE(sf.LinearSchedule())
    a, s = sde.alpha_sigma(0.3)
    x, eps = jax.random.normal(getkey(), (2, 6))
    x0 = sf.x0_from_eps(x, eps, a, s)
    np.testing.assert_allclose(sf.eps_from_x0(x, x0, a, s), eps, rtol=1e-10)
    score = sf.score_from_eps(eps, s)
    np.testing.assert_allclose(sf.score_from_x0(x, x0, a, s), score, rtol=1e-10)
    np.testing.assert_allclose(sf.x0_from_score(x, score, a, s), x0, rtol=1e-10)
    v = sf.v_from_eps_x0(eps, x0, a, s)
    np.testing.assert_allclose(a * x - s * v, x0, rtol=1e-10)  # VP: x0 = alpha x - sigma v


def test_network_output_shape_checked():
    sde = sf.VPSDE(sf.LinearSchedule())
    model = sf.ScoreModel(lambda c, x, cond, *, key=None: jnp.zeros(3), sde, sf.EpsPrediction())
    with pytest.raises(ValueError, match="shape of x"):
        model(0.5, jnp.zeros(2))


def test_bad_sigma_data():
    with pytest.raises(ValueError, match="sigma_data"):
        sf.EDMPreconditioning(sigma_data=0.0)
