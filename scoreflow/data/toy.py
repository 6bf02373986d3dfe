"""2-D toy mixtures with exact densities (`GaussianMixture`), for checks against analytic answers."""

import math

import numpy as np

from .._reference import GaussianMixture
from ._dataset import Dataset


def _ring(k: int, radius: float, std: float) -> GaussianMixture:
    angles = 2 * math.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(np.ones(k), means, np.broadcast_to(std**2 * np.eye(2), (k, 2, 2)).copy())


def _grid(n: int, spacing: float, std: float) -> GaussianMixture:
    c = spacing * (np.arange(n) - (n - 1) / 2)
    means = np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1).reshape(-1, 2)
    k = means.shape[0]
    return GaussianMixture(np.ones(k), means, np.broadcast_to(std**2 * np.eye(2), (k, 2, 2)).copy())


def _two() -> GaussianMixture:
    return GaussianMixture(
        np.array([0.3, 0.7]), np.array([[-2.0, 0.0], [1.5, 1.0]]), np.stack([0.3 * np.eye(2), 0.5 * np.eye(2)])
    )


TOY_MIXTURES = {
    "ring8": lambda: _ring(8, 2.0, 0.15),
    "grid9": lambda: _grid(3, 1.5, 0.2),
    "two": _two,
}
"""Names of the built-in 2-D mixtures: 8 Gaussians on a ring of radius 2, a 3x3 grid, and a two-component
mixture with different scales."""


def toy_mixture(name: str) -> GaussianMixture:
    """The built-in 2-D mixture called `name` (one of `TOY_MIXTURES`)."""
    if name not in TOY_MIXTURES:
        raise ValueError(f"unknown toy mixture {name!r}; expected one of {sorted(TOY_MIXTURES)}")
    return TOY_MIXTURES[name]()


def load_toy(name: str, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0) -> Dataset:
    """Samples from a built-in mixture (float32), with its exact density attached as `Dataset.density`."""
    if n_train < 1 or n_test < 1:
        raise ValueError(f"`n_train` and `n_test` must be >= 1; got n_train={n_train}, n_test={n_test}")
    gmm = toy_mixture(name)
    # Sampled with numpy (no compilation): component by weight, then mean + Cholesky factor times normal noise.
    w, mu = np.asarray(gmm.weights, np.float64), np.asarray(gmm.means, np.float64)
    chol = np.linalg.cholesky(np.asarray(gmm.covariances, np.float64))
    rng = np.random.default_rng([seed, 0])

    def draw(n):
        comp = rng.choice(len(w), size=n, p=w / w.sum())
        z = rng.standard_normal((n, mu.shape[1]))
        return (mu[comp] + np.einsum("nij,nj->ni", chol[comp], z)).astype(np.float32)

    train, test = draw(n_train), draw(n_test)
    return Dataset(f"toy:{name}", train, test, None, f"scoreflow toy mixture {name!r}", density=gmm)
