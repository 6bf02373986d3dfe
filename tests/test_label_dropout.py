"""label_dropout: the null label replaces each label with the stated probability, and nothing else changes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoreflow as sf


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_label_dropout_rate(rate):
    n = 20_000
    labels = jnp.arange(n, dtype=jnp.int32) % 10
    out = sf.label_dropout(labels, 10, rate, key=jax.random.key(0))
    assert out.dtype == labels.dtype and out.shape == labels.shape
    dropped = np.asarray(out == 10)
    # binomial: 5 standard errors (0.011 at rate 0.5); a rate off by 5% of itself (0.1 -> 0.105) fails at 0.1
    se = np.sqrt(rate * (1 - rate) / n)
    assert abs(dropped.mean() - rate) < min(5 * se, 0.04 * rate + 2 * se), dropped.mean()
    np.testing.assert_array_equal(np.asarray(out)[~dropped], np.asarray(labels)[~dropped])
    # dropping is independent of the class: each class loses about `rate` of its labels
    per_class = np.array([dropped[np.asarray(labels) == k].mean() for k in range(10)])
    assert np.abs(per_class - rate).max() < 6 * np.sqrt(rate * (1 - rate) / (n / 10))
    # the same key drops the same labels; another key others
    np.testing.assert_array_equal(np.asarray(sf.label_dropout(labels, 10, rate, key=jax.random.key(0))), out)
    assert (np.asarray(sf.label_dropout(labels, 10, rate, key=jax.random.key(1))) != np.asarray(out)).any()


def test_label_dropout_edges():
    labels = jnp.array([[0, 3], [9, 1]])
    np.testing.assert_array_equal(sf.label_dropout(labels, 10, 0.0, key=jax.random.key(0)), labels)
    np.testing.assert_array_equal(sf.label_dropout(labels, 10, 1.0, key=jax.random.key(0)), jnp.full((2, 2), 10))
    jitted = jax.jit(lambda y, k: sf.label_dropout(y, 10, 1.0, key=k))
    np.testing.assert_array_equal(jitted(labels, jax.random.key(0)), jnp.full((2, 2), 10))
    with pytest.raises(ValueError, match=r"`rate` must be a probability in \[0, 1\]; got rate=1.5"):
        sf.label_dropout(labels, 10, 1.5, key=jax.random.key(0))
    with pytest.raises(TypeError, match="labels"):
        sf.label_dropout(jnp.zeros(3), 10, 0.1, key=jax.random.key(0))
