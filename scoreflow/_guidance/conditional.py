r"""The exact conditional of a Gaussian mixture given a linear observation: the reference for conditional sampling.

For $p(x) = \sum_k w_k N(\mu_k, \Sigma_k)$ and $y = A x + \nu\epsilon$, each component conditions as a Gaussian,
$S_k = A\Sigma_k A^\top + \nu^2 I$, $K_k = \Sigma_k A^\top S_k^{-1}$, mean $\mu_k + K_k(y - A\mu_k)$, covariance
$\Sigma_k - K_k A \Sigma_k$, and the weights become $w_k N(y; A\mu_k, S_k) / p(y)$ (each component's evidence).
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from .._reference import GaussianMixture
from .observation import AbstractObservation


def condition(mixture: GaussianMixture, observation: AbstractObservation, y: ArrayLike) -> GaussianMixture:
    r"""The exact conditional $p(x \mid y)$ of `mixture` under `observation`, again a Gaussian mixture.

    - With `observation.noise > 0` it is a mixture over $x$ itself (dimension d).
    - With a noise-free observation $x$ lies on $\{A x = y\}$ and the conditional is degenerate there; the result is
      then the (non-degenerate) mixture of the free coordinates $z = N^\top x$ (dimension $d - m$; for a `Mask` these
      are the unknown coordinates in order), and `observation.embed(y, z)` maps them back to $x$.

    Dense LAPACK on small (k, d, d) arrays, in float64 NumPy, once; `mixture` and `y` must be concrete.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"`mixture` must be a GaussianMixture; got {type(mixture).__name__}")
    if not isinstance(observation, AbstractObservation):
        raise TypeError(f"`observation` must be an AbstractObservation (Mask, Linear, ...); got {observation!r}")
    if observation.shape != (mixture.dim,):
        raise ValueError(
            f"`observation` acts on examples of shape {observation.shape}; the mixture's are ({mixture.dim},)"
        )
    a = np.asarray(observation.matrix(), np.float64)
    m = a.shape[0]
    yv = np.asarray(y, np.float64)
    if yv.shape != (m,):
        raise ValueError(f"`y` must have shape ({m},), one value per observed coordinate; got {yv.shape}")
    w = np.asarray(mixture.weights, np.float64)
    mu = np.asarray(mixture.means, np.float64)
    cov = np.asarray(mixture.covariances, np.float64)
    nu2 = float(observation.noise) ** 2
    means, covs, logw = [], [], []
    for k in range(mixture.num_components):
        s = a @ cov[k] @ a.T + nu2 * np.eye(m)
        gain = np.linalg.solve(s, a @ cov[k]).T  # Sigma A^T S^{-1} (S symmetric)
        r = yv - a @ mu[k]
        means.append(mu[k] + gain @ r)
        c = cov[k] - gain @ a @ cov[k]
        covs.append(0.5 * (c + c.T))
        _, logdet = np.linalg.slogdet(s)
        logw.append(np.log(w[k]) - 0.5 * (r @ np.linalg.solve(s, r) + logdet + m * np.log(2 * np.pi)))
    logw = np.asarray(logw)
    means, covs = np.stack(means), np.stack(covs)
    if nu2 == 0.0:
        n = np.asarray(observation.null_basis(), np.float64)
        means = means @ n
        covs = np.einsum("di,kde,ej->kij", n, covs, n)
        covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))
    weights = np.exp(logw - logw.max())
    dtype = mixture.means.dtype
    return GaussianMixture(
        jnp.asarray(weights / weights.sum(), dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype)
    )


def log_evidence(mixture: GaussianMixture, observation: AbstractObservation, y: ArrayLike) -> float:
    r"""$\log p(y) = \log\sum_k w_k N(y; A\mu_k, A\Sigma_k A^\top + \nu^2 I)$, float64."""
    a = np.asarray(observation.matrix(), np.float64)
    m = a.shape[0]
    yv = np.asarray(y, np.float64)
    terms = []
    for k in range(mixture.num_components):
        s = a @ np.asarray(mixture.covariances[k], np.float64) @ a.T + float(observation.noise) ** 2 * np.eye(m)
        r = yv - a @ np.asarray(mixture.means[k], np.float64)
        _, logdet = np.linalg.slogdet(s)
        terms.append(
            np.log(float(mixture.weights[k])) - 0.5 * (r @ np.linalg.solve(s, r) + logdet + m * np.log(2 * np.pi))
        )
    terms = np.asarray(terms)
    return float(terms.max() + np.log(np.exp(terms - terms.max()).sum()))
