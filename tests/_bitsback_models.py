"""Tiny fixed models for the bits-back tests (importable by the subprocess test): no random initialisation, so the
golden stream depends only on the codec's numerics and format."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoreflow as sf


DIM = 4
LEVELS = 5
W = np.array([[0.6, -0.2, 0.1, 0.0], [0.1, 0.5, -0.3, 0.2], [0.0, 0.2, 0.7, -0.1], [-0.2, 0.0, 0.1, 0.4]])


class TinyNet(eqx.Module):
    """eps-net: tanh(W x + 0.3 c_noise) - a fixed nonlinear map."""

    w: jax.Array
    scale: float = 1.0

    def __call__(self, c_noise, x, cond=None, *, key=None):
        return self.scale * jnp.tanh(self.w.astype(x.dtype) @ x + 0.3 * c_noise)


class Constant(eqx.Module):
    """x0-net returning a fixed image: with X0Prediction the model's p equals the posterior q for that image."""

    x: jax.Array

    def __call__(self, c_noise, x, cond=None, *, key=None):
        return self.x.astype(x.dtype)


def tiny_vdm(scale: float = 1.0, gamma=(-6.0, 6.0)):
    sde = sf.VPSDE(sf.FixedLinearSchedule(*gamma))
    return sf.ScoreModel(TinyNet(jnp.asarray(W), scale), sde, sf.EpsPrediction())


def cheating_vdm(x, gamma=(-9.0, 9.0)):
    return sf.ScoreModel(Constant(jnp.asarray(x)), sf.VPSDE(sf.FixedLinearSchedule(*gamma)), sf.X0Prediction())


def tiny_data(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, LEVELS, size=(n, DIM))


def tiny_d3pm(num_states: int, dim: int = DIM):
    w = jnp.asarray(np.random.default_rng(1).normal(size=(dim, num_states, dim, num_states)) * 0.3)

    def model(s, x, cond=None, *, key=None):
        oh = jax.nn.one_hot(x, num_states, dtype=w.dtype)
        return jnp.einsum("dk,dkel->el", oh, w) + s

    return model
