r"""Gaussian mixtures with full covariances: the analytic reference of scoreflow's tests and benchmarks.

Each covariance is held as its eigendecomposition $\Sigma_k = U_k \operatorname{diag}(\lambda_k) U_k^\top$,
computed once at construction. Log-densities, scores and samples are then matrix products only, and the
perturbed marginal $\alpha^2\Sigma_k + \sigma^2 I = U_k \operatorname{diag}(\alpha^2\lambda_k + \sigma^2) U_k^\top$
keeps the same eigenvectors, so `marginal` at any t factorises nothing. This keeps LAPACK out of compiled
sampler and likelihood loops, where jaxlib 0.10's CPU kernels can deadlock on large batches (issue 9).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _check_concrete(weights: Array, means: Array, covariances: Array) -> None:
    """Eager checks with messages that name the argument, the offending component and the value."""
    w = np.asarray(weights, np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"`weights` must be finite and non-negative; got weights={w.tolist()}")
    if not w.sum() > 0:
        raise ValueError(f"`weights` must not all be zero (they are normalised to sum to 1); got weights={w.tolist()}")
    m = np.asarray(means, np.float64)
    bad = np.flatnonzero(~np.all(np.isfinite(m), axis=1))
    if bad.size:
        raise ValueError(f"`means` must be finite; means[{bad[0]}] = {m[bad[0]].tolist()}")
    c = np.asarray(covariances, np.float64)
    bad = np.flatnonzero(~np.all(np.isfinite(c), axis=(1, 2)))
    if bad.size:
        raise ValueError(f"`covariances` must be finite; covariances[{bad[0]}] has NaN or inf entries")
    tol = np.sqrt(np.finfo(np.asarray(covariances).dtype).eps)
    for k in range(c.shape[0]):
        asym = np.max(np.abs(c[k] - c[k].T))
        scale = max(np.max(np.abs(c[k])), np.finfo(np.float64).tiny)
        if asym > tol * scale:
            raise ValueError(
                f"`covariances` must be symmetric; covariances[{k}] has max |S - S^T| = {asym:.3g} "
                f"(relative {asym / scale:.3g} > tolerance {tol:.3g})"
            )


class GaussianMixture(eqx.Module):
    r"""$p(x) = \sum_k w_k N(x; \mu_k, \Sigma_k)$ over vectors of dimension d.

    Follows the distrax conventions: `sample(seed=key, sample_shape=...)`, `log_prob(x)` over any leading
    batch axes of `x`. Also gives the exact `score` and per-component responsibilities. Covariances are
    stored as `eigenvalues` $\lambda_k$ (k, d) and `eigenvectors` $U_k$ (k, d, d); `covariances` rebuilds them.
    """

    weights: Float[Array, " k"]
    means: Float[Array, "k d"]
    eigenvalues: Float[Array, "k d"]
    eigenvectors: Float[Array, "k d d"]

    def __init__(self, weights: ArrayLike, means: ArrayLike, covariances: ArrayLike):
        """**Arguments:** `weights` (k,) finite, non-negative, not all zero, normalised here; `means` (k, d)
        finite; `covariances` (k, d, d) finite, symmetric (to $\\sqrt{\\epsilon}$ relative) and positive definite.

        Concrete arguments are checked eagerly (`ValueError` naming the component); traced ones under `jit`
        through `eqx.error_if`."""
        weights, means, covariances = jnp.asarray(weights), jnp.asarray(means), jnp.asarray(covariances)
        dtype = jnp.result_type(weights, means, covariances, float)
        if means.ndim != 2:
            raise ValueError(f"`means` must have shape (k, d); got shape {means.shape}")
        k, d = means.shape
        if weights.shape != (k,):
            raise ValueError(f"`weights` must have shape (k,) = ({k},) to match `means`; got {weights.shape}")
        if covariances.shape != (k, d, d):
            raise ValueError(f"`covariances` must have shape (k, d, d) = ({k}, {d}, {d}); got {covariances.shape}")
        weights, means, covariances = weights.astype(dtype), means.astype(dtype), covariances.astype(dtype)
        concrete = _is_concrete(weights, means, covariances)
        if concrete:
            _check_concrete(weights, means, covariances)
        else:
            weights = eqx.error_if(
                weights,
                jnp.any(weights < 0) | ~jnp.all(jnp.isfinite(weights)) | ~(jnp.sum(weights) > 0),
                "`weights` must be finite, non-negative and not all zero",
            )
        sym = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
        eigenvalues, eigenvectors = jnp.linalg.eigh(sym)
        if concrete:
            lam = np.asarray(eigenvalues)
            bad = np.flatnonzero(~(lam.min(axis=1) > 0))
            if bad.size:
                raise ValueError(
                    f"`covariances` must be positive definite; covariances[{bad[0]}] has smallest eigenvalue "
                    f"{lam[bad[0]].min():.3g}"
                )
        else:
            eigenvalues = eqx.error_if(
                eigenvalues,
                ~jnp.all(eigenvalues > 0),
                "`covariances` must be finite, symmetric and positive definite",
            )
        self.weights = weights / jnp.sum(weights)
        self.means = means
        self.eigenvalues = eigenvalues
        self.eigenvectors = eigenvectors

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def event_shape(self) -> tuple[int]:
        return (self.dim,)

    @property
    def covariances(self) -> Float[Array, "k d d"]:
        r"""$\Sigma_k = U_k \operatorname{diag}(\lambda_k) U_k^\top$."""
        u = self.eigenvectors
        return jnp.einsum("kij,kj,klj->kil", u, self.eigenvalues, u)

    def affine(self, alpha: ArrayLike, sigma: ArrayLike) -> "GaussianMixture":
        r"""The law of $\alpha x + \sigma\epsilon$, $\epsilon \sim N(0, I)$: means $\alpha\mu_k$, eigenvalues
        $\alpha^2\lambda_k + \sigma^2$, the same eigenvectors. No factorisation: safe inside compiled loops."""
        alpha = jnp.asarray(alpha, self.means.dtype)
        sigma = jnp.asarray(sigma, self.means.dtype)
        return eqx.tree_at(
            lambda m: (m.means, m.eigenvalues),
            self,
            (alpha * self.means, alpha**2 * self.eigenvalues + sigma**2),
        )

    def _check_x(self, x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last axis of size d = {self.dim}; got shape {x.shape}")
        return x

    def _whiten(self, x: Float[Array, " d"]) -> Float[Array, "k d"]:
        """$U_k^\\top (x - \\mu_k)$ for each component."""
        return jnp.einsum("kij,ki->kj", self.eigenvectors, x[None] - self.means)

    def component_log_probs(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        r"""$\log w_k + \log N(x; \mu_k, \Sigma_k)$ for each component, one example."""
        z = self._whiten(x)
        quad = jnp.sum(z**2 / self.eigenvalues, axis=-1)
        logdet = jnp.sum(jnp.log(self.eigenvalues), axis=-1)
        return jnp.log(self.weights) - 0.5 * (quad + logdet + self.dim * jnp.log(2 * jnp.pi))

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

        def one(xi):
            z = self._whiten(xi)
            quad = jnp.sum(z**2 / self.eigenvalues, axis=-1)
            logdet = jnp.sum(jnp.log(self.eigenvalues), axis=-1)
            r = jax.nn.softmax(jnp.log(self.weights) - 0.5 * (quad + logdet))
            prec_diff = jnp.einsum("kij,kj->ki", self.eigenvectors, z / self.eigenvalues)
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
        z = jax.random.normal(kz, (n, self.dim), dtype=self.means.dtype)
        root = self.eigenvectors * jnp.sqrt(self.eigenvalues)[:, None, :]  # U diag(sqrt(lambda))
        x = self.means[comp] + jnp.einsum("nij,nj->ni", root[comp], z)
        return x.reshape(sample_shape + (self.dim,))

    def mean(self) -> Float[Array, " d"]:
        return self.weights @ self.means

    def covariance(self) -> Float[Array, "d d"]:
        m = self.mean()
        diff = self.means - m[None]
        return jnp.einsum("k,kij->ij", self.weights, self.covariances) + jnp.einsum(
            "k,ki,kj->ij", self.weights, diff, diff
        )
