"""Shared test objects: tuples of every SDE / schedule to parametrise over, and small mixtures."""

import jax
import jax.numpy as jnp

import scoreflow as sf


def schedules():
    return (
        sf.LinearSchedule(),
        sf.CosineSchedule(),
        sf.FixedLinearSchedule(),
        sf.LearnedSchedule(hidden=16, key=jax.random.key(3)),
    )


def sdes():
    return (
        sf.VPSDE(sf.LinearSchedule()),
        sf.VPSDE(sf.CosineSchedule()),
        sf.SubVPSDE(sf.LinearSchedule()),
        sf.VESDE(sigma_min=0.01, sigma_max=50.0),
        sf.EDMSDE(sigma_min=0.002, sigma_max=80.0),
    )


def sde_ids():
    return ["vp-linear", "vp-cosine", "subvp", "ve", "edm"]


def mixture2(dtype=jnp.float64):
    """The two-component mixture of the acceptance snippets."""
    return sf.GaussianMixture(
        weights=jnp.array([0.3, 0.7], dtype),
        means=jnp.array([[-2.0, 0.0], [1.5, 1.0]], dtype),
        covariances=jnp.stack([0.3 * jnp.eye(2, dtype=dtype), 0.5 * jnp.eye(2, dtype=dtype)]),
    )


def mixture_full(key, k=3, d=3, dtype=jnp.float64):
    """A mixture with random full covariances."""
    k1, k2, k3 = jax.random.split(key, 3)
    means = 2.0 * jax.random.normal(k1, (k, d), dtype)
    a = jax.random.normal(k2, (k, d, d), dtype) * 0.4
    covs = jnp.einsum("kij,klj->kil", a, a) + 0.2 * jnp.eye(d, dtype=dtype)[None]
    w = jax.random.uniform(k3, (k,), dtype, 0.2, 1.0)
    return sf.GaussianMixture(w, means, covs)


def cli_exits_2(capsys, argv, *needles):
    """`scoreflow ARGV` exits with code 2 and its error output contains every needle."""
    import pytest

    from scoreflow._cli.main import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for n in needles:
        assert n in err, (n, err)
