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
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


# Differentiable linear algebra from a stored eigendecomposition. The eigenpairs are computed without gradient
# (eigh's derivative is NaN for repeated eigenvalues, e.g. isotropic covariances); every derivative is taken
# from the covariance matrix C itself, which is carried beside them: d(C^{-1} v) = C^{-1} dv - C^{-1} dC C^{-1} v,
# d log|C| = tr(C^{-1} dC). The rules call `_inv_apply` again, so derivatives of every order are right.


@jax.custom_jvp
def _inv_apply(v, cov, lam, u):
    """C^{-1} v for C = u diag(lam) u^T; `v` is (d,) or (d, m)."""
    scale = lam if v.ndim == 1 else lam[:, None]
    return u @ ((u.T @ v) / scale)


def _inv_apply_jvp(primals, tangents):
    v, cov, lam, u = primals
    dv, dcov, _, _ = tangents
    out = _inv_apply(v, cov, lam, u)
    dout = jnp.zeros_like(out)
    if not isinstance(dv, SymbolicZero):
        dout = dout + _inv_apply(dv, cov, lam, u)
    if not isinstance(dcov, SymbolicZero):
        dout = dout - _inv_apply(dcov @ out, cov, lam, u)
    return out, dout


_inv_apply.defjvp(_inv_apply_jvp, symbolic_zeros=True)


@jax.custom_jvp
def _logdet(cov, lam, u):
    """log |C| = sum(log lam)."""
    return jnp.sum(jnp.log(lam))


def _logdet_jvp(primals, tangents):
    cov, lam, u = primals
    dcov = tangents[0]
    out = _logdet(cov, lam, u)
    if isinstance(dcov, SymbolicZero):
        return out, jnp.zeros_like(out)
    return out, jnp.trace(_inv_apply(dcov, cov, lam, u))


_logdet.defjvp(_logdet_jvp, symbolic_zeros=True)


@jax.custom_jvp
def _sqrt_apply(z, cov, lam, u):
    """C^{1/2} z with the symmetric square root u diag(sqrt lam) u^T."""
    return u @ (jnp.sqrt(lam) * (u.T @ z))


def _sqrt_apply_jvp(primals, tangents):
    # Daleckii-Krein: d(C^{1/2}) = u (F o (u^T dC u)) u^T with F_ij = 1 / (sqrt(lam_i) + sqrt(lam_j)), finite
    # also for repeated eigenvalues. First order only (the rule's u, lam carry no derivative).
    z, cov, lam, u = primals
    dz, dcov, _, _ = tangents
    out = _sqrt_apply(z, cov, lam, u)
    dout = jnp.zeros_like(out)
    if not isinstance(dz, SymbolicZero):
        dout = dout + _sqrt_apply(dz, cov, lam, u)
    if not isinstance(dcov, SymbolicZero):
        r = jnp.sqrt(lam)
        f = 1.0 / (r[:, None] + r[None, :])
        dout = dout + u @ ((f * (u.T @ dcov @ u)) @ (u.T @ z))
    return out, dout


_sqrt_apply.defjvp(_sqrt_apply_jvp, symbolic_zeros=True)


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
    batch axes of `x`. Also gives the exact `score` and per-component responsibilities.

    Besides `covariances` it holds their eigendecomposition (`eigenvalues` (k, d), `eigenvectors` (k, d, d)),
    computed once here, without gradient; evaluation uses only products with it, and derivatives with respect
    to the parameters flow through `covariances` (exact also for repeated eigenvalues).
    """

    weights: Float[Array, " k"]
    means: Float[Array, "k d"]
    covariances: Float[Array, "k d d"]
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
        eigenvalues, eigenvectors = jnp.linalg.eigh(jax.lax.stop_gradient(sym))
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
        self.covariances = sym
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

    def affine(self, alpha: ArrayLike, sigma: ArrayLike) -> "GaussianMixture":
        r"""The law of $\alpha x + \sigma\epsilon$, $\epsilon \sim N(0, I)$: means $\alpha\mu_k$, covariances
        $\alpha^2\Sigma_k + \sigma^2 I$ with eigenvalues $\alpha^2\lambda_k + \sigma^2$ and the same eigenvectors.
        No factorisation: safe inside compiled loops."""
        alpha = jnp.asarray(alpha, self.means.dtype)
        sigma = jnp.asarray(sigma, self.means.dtype)
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return eqx.tree_at(
            lambda m: (m.means, m.covariances, m.eigenvalues),
            self,
            (
                alpha * self.means,
                alpha**2 * self.covariances + (sigma**2 * eye)[None],
                alpha**2 * self.eigenvalues + sigma**2,
            ),
        )

    def _check_x(self, x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"`x` must have last axis of size d = {self.dim}; got shape {x.shape}")
        return x

    def _terms(self, x: Float[Array, " d"]) -> tuple[Array, Array]:
        r"""Unnormalised component log-densities $\log w_k - \frac12(r^\top\Sigma_k^{-1}r + \log|\Sigma_k|)$ and
        $\Sigma_k^{-1} r$, with $r = x - \mu_k$."""
        diff = x[None] - self.means
        prec_diff = jax.vmap(_inv_apply)(diff, self.covariances, self.eigenvalues, self.eigenvectors)
        quad = jnp.sum(diff * prec_diff, axis=-1)
        logdet = jax.vmap(_logdet)(self.covariances, self.eigenvalues, self.eigenvectors)
        return jnp.log(self.weights) - 0.5 * (quad + logdet), prec_diff

    def component_log_probs(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        r"""$\log w_k + \log N(x; \mu_k, \Sigma_k)$ for each component, one example."""
        return self._terms(x)[0] - 0.5 * self.dim * jnp.log(2 * jnp.pi)

    def responsibilities(self, x: Float[Array, " d"]) -> Float[Array, " k"]:
        """Posterior component probabilities p(k | x)."""
        return jax.nn.softmax(self._terms(x)[0])

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
            logits, prec_diff = self._terms(xi)
            return -jnp.einsum("k,kd->d", jax.nn.softmax(logits), prec_diff)

        return jax.vmap(one)(flat).reshape(x.shape)

    def sample(self, *, seed: PRNGKeyArray, sample_shape: tuple[int, ...] | int = ()) -> Array:
        """Draws $\\mu_k + \\Sigma_k^{1/2} z$ (symmetric square root; reparameterisation gradients with respect to
        the parameters are first-order exact)."""
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        sample_shape = tuple(sample_shape)
        n = 1
        for s in sample_shape:
            n *= s
        kc, kz = jax.random.split(seed)
        comp = jax.random.choice(kc, self.num_components, shape=(n,), p=self.weights)
        z = jax.random.normal(kz, (n, self.dim), dtype=self.means.dtype)
        root_z = jax.vmap(_sqrt_apply)(z, self.covariances[comp], self.eigenvalues[comp], self.eigenvectors[comp])
        x = self.means[comp] + root_z
        return x.reshape(sample_shape + (self.dim,))

    def mean(self) -> Float[Array, " d"]:
        return self.weights @ self.means

    def covariance(self) -> Float[Array, "d d"]:
        m = self.mean()
        diff = self.means - m[None]
        return jnp.einsum("k,kij->ij", self.weights, self.covariances) + jnp.einsum(
            "k,ki,kj->ij", self.weights, diff, diff
        )
