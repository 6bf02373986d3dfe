r"""The one place where score, eps, x0 and v are converted into one another.

With $x = \alpha x_0 + \sigma \epsilon$: $s = -\epsilon/\sigma$, $x_0 = (x - \sigma\epsilon)/\alpha$,
$s = (\alpha x_0 - x)/\sigma^2$, and $v = \bar\alpha\epsilon - \bar\sigma x_0$ with
$(\bar\alpha, \bar\sigma) = (\alpha, \sigma)/\sqrt{\alpha^2 + \sigma^2}$ (Salimans & Ho, 2022; equal to
$(\alpha, \sigma)$ for variance-preserving processes).
"""

from jaxtyping import Array


def score_from_eps(eps: Array, sigma: Array) -> Array:
    return -eps / sigma


def eps_from_score(score: Array, sigma: Array) -> Array:
    return -sigma * score


def x0_from_eps(x: Array, eps: Array, alpha: Array, sigma: Array) -> Array:
    return (x - sigma * eps) / alpha


def eps_from_x0(x: Array, x0: Array, alpha: Array, sigma: Array) -> Array:
    return (x - alpha * x0) / sigma


def score_from_x0(x: Array, x0: Array, alpha: Array, sigma: Array) -> Array:
    return (alpha * x0 - x) / sigma**2


def x0_from_score(x: Array, score: Array, alpha: Array, sigma: Array) -> Array:
    return (x + sigma**2 * score) / alpha


def v_from_eps_x0(eps: Array, x0: Array, alpha: Array, sigma: Array) -> Array:
    r = (alpha**2 + sigma**2) ** 0.5
    return (alpha * eps - sigma * x0) / r
