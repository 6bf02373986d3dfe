"""Gaussian mixtures with full covariances: the analytic reference of scoreflow's tests and benchmarks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


class GaussianMixture(eqx.Module):
    r"""$p(x) = \sum_k w_k N(x; \mu_k, \Sigma_k)$ over vectors of dimension d.

    Follows the distrax conventions: `sample(seed=key, sample_shape=...)`, `log_prob(x)` over any leading
    batch axes of `x`. Also gives the exact `score` and per-component responsibilities.
    """

    weights: Float[Array, " k"]
    means: Float[Array, "k d"]
    covariances: Float[Array, "k d d"]

    def __init__(self, weights: ArrayLike, means: ArrayLike, covariances: ArrayLike):
        """**Arguments:** `weights` (k,) non-negative, normalised here; `means` (k, d);
        `covariances` (k, d, d) symmetric positive definite."""
        weights, means, covariances = jnp.asarray(weights), jnp.asarray(means), jnp.asarray(covariances)
        dtype = jnp.result_type(weights, means, covariances, float)
        if means.ndim != 2:
            raise ValueError(f"`means` must have shape (k, d); got shape {means.shape}")
        k, d = means.shape
        if weights.shape != (k,):
            raise ValueError(f"`weights` must have shape (k,) = ({k},) to match `means`; got {weights.shape}")
        if covariances.shape != (k, d, d):
            raise ValueError(f"`covariances` must have shape (k, d, d) = ({k}, {d}, {d}); got {covariances.shape}")
        weights = eqx.error_if(weights, jnp.any(weights < 0) | ~jnp.all(jnp.isfinite(weights)),
                               "`weights` must be finite and non-negative")
        self.weights = (weights / jnp.sum(weights)).astype(dtype)
        self.means = means.astype(dtype)
        self.covariances = covariances.astype(dtype)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def event_shape(self) -> tuple[int]:
        return (self.dim,)

    def _check_x(self, x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last axis of size d = {self.dim}; got shape {x.shape}")
        return x

    def component_log_probs(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        r"""$\log w_k + \log N(x; \mu_k, \Sigma_k)$ for each component, one example."""
        chol = jnp.linalg.cholesky(self.covariances)

        def one(mu, L):
            z = jsl.solve_triangular(L, x - mu, lower=True)
            logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(L)))
            return -0.5 * (jnp.sum(z**2) + logdet + self.dim * jnp.log(2 * jnp.pi))

        return jnp.log(self.weights) + jax.vmap(one)(self.means, chol)

    def responsibilities(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        """Posterior component probabilities p(k | x)."""
        return jax.nn.softmax(self.component_log_probs(x))

    def log_prob(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch"]:
        x = self._check_x(x)
        flat = x.reshape(-1, self.dim)
        out = jax.vmap(lambda xi: jax.nn.logsumexp(self.component_log_probs(xi)))(flat)
        return out.reshape(x.shape[:-1])

    def score(self, x: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
        r"""$\nabla_x \log p(x) = -\sum_k p(k|x) \Sigma_k^{-1}(x - \mu_k)$, closed form."""
        x = self._check_x(x)
        flat = x.reshape(-1, self.dim)
        cho = jax.vmap(lambda c: jsl.cho_factor(c, lower=True)[0])(self.covariances)

        def one(xi):
            r = self.responsibilities(xi)
            prec_diff = jax.vmap(lambda L, mu: jsl.cho_solve((L, True), xi - mu))(cho, self.means)
            return -jnp.einsum("k,kd->d", r, prec_diff)

        return jax.vmap(one)(flat).reshape(x.shape)

    def sample(self, *, seed: PRNGKeyArray, sample_shape: tuple[int, ...] | int = ()) -> Array:
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        sample_shape = tuple(sample_shape)
        n = 1
        for s in sample_shape:
            n *= s
        kc, kz = jax.random.split(seed)
        comp = jax.random.choice(kc, self.num_components, shape=(n,), p=self.weights)
        chol = jnp.linalg.cholesky(self.covariances)
        z = jax.random.normal(kz, (n, self.dim), dtype=self.means.dtype)
        x = self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z)
        return x.reshape(sample_shape + (self.dim,))

    def mean(self) -> Float[Array, " d"]:
        return self.weights @ self.means

    def covariance(self) -> Float[Array, "d d"]:
        m = self.mean()
        diff = self.means - m[None]
        return jnp.einsum("k,kij->ij", self.weights, self.covariances) + jnp.einsum(
            "k,ki,kj->ij", self.weights, diff, diff
        )
