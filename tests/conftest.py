"""Test configuration: float64 by default (float32 checks pass explicit dtypes), rank-promotion errors,
and a `getkey` fixture. Runtime type checking (jaxtyping + beartype) is switched on for `scoreflow`
by pytest's addopts in pyproject.toml."""

import itertools

import jax
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """`getkey()` returns a fresh PRNG key each call, deterministically seeded per test."""
    counter = itertools.count()

    def _getkey():
        return jax.random.fold_in(jax.random.key(0), next(counter))

    return _getkey
