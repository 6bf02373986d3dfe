r"""Noise-contrastive estimation (NCE) of density ratios against a base prior, single- and multi-stage.

A log-ratio $h(z) \approx \log q(z) / p(z)$ is fitted by logistic regression between samples of a target $q$
(label 1) and of a reference $p$ (label 0), with logit $h(z) - \log\nu$, $\nu = m / n$ (Gutmann & Hyvärinen
2010). The population optimum is exactly $h = \log q/p$, including its constant: the model $p\,e^h$ is
self-normalised, so NCE recovers a log-normaliser.

The multi-stage prior (Xiao & Han 2022) is $p_K(z) \propto p_0(z) \prod_{k=1}^K r_k(z)$, $p_0 = N(0, I)$,
$\log r_k = h_k$, where stage $k$ separates the target samples from samples of the current prior $p_{k-1}$. One
stage fails when $q$ and $p_0$ barely overlap (the logistic loss is flat: the "density chasm"); each later stage
starts from a prior that already overlaps $q$.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._custom_types import Scalar
from .mcmc import AbstractMCMCKernel, mcmc


# ----------------------------------------------------------------------------------------------------------------
# log-ratio models
# ----------------------------------------------------------------------------------------------------------------


class AbstractLogRatio(eqx.Module):
    r"""A log density ratio $h(z) = \log r(z)$ on one latent vector. Call as `h(z)`."""

    dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, z: Float[Array, " dim"]) -> Scalar:
        """$h(z)$ for one vector `z` of shape `(dim,)`."""


def _check_dim(name: str, dim: object) -> None:
    if not (isinstance(dim, int) and dim >= 1):
        raise ValueError(f"{name} needs `dim` to be an int >= 1; got dim={dim!r}")


class QuadraticLogRatio(AbstractLogRatio):
    r"""$h(z) = -\tfrac12 z^\top S z + b^\top z + c$ with $S = (W + W^\top)/2$: the exact log ratio of two
    Gaussians. Starts at $h = 0$. A prior $p_0 \prod_k r_k$ of such ratios is Gaussian, so it can be sampled
    exactly (`ExactGaussianSampling`)."""

    dim: int = eqx.field(static=True)
    w: Float[Array, "dim dim"]
    b: Float[Array, " dim"]
    c: Float[Array, ""]

    def __init__(self, dim: int, *, dtype=None):
        _check_dim("QuadraticLogRatio", dim)
        dtype = jnp.zeros(()).dtype if dtype is None else dtype
        self.dim = dim
        self.w = jnp.zeros((dim, dim), dtype)
        self.b = jnp.zeros((dim,), dtype)
        self.c = jnp.zeros((), dtype)

    @property
    def precision(self) -> Float[Array, "dim dim"]:
        """$S$, the symmetric part of `w`."""
        return 0.5 * (self.w + self.w.T)

    def __call__(self, z: Float[Array, " dim"]) -> Scalar:
        _check_input(self, z)
        return -0.5 * z @ (self.precision @ z) + self.b @ z + self.c


class LinearLogRatio(AbstractLogRatio):
    r"""$h(z) = b^\top z + c$: the exact log ratio of two Gaussians with the same covariance. Starts at $h = 0$.
    Unlike `QuadraticLogRatio` it can never make $p_0 \prod_k r_k$ improper, however badly a stage is fitted."""

    dim: int = eqx.field(static=True)
    b: Float[Array, " dim"]
    c: Float[Array, ""]

    def __init__(self, dim: int, *, dtype=None):
        _check_dim("LinearLogRatio", dim)
        dtype = jnp.zeros(()).dtype if dtype is None else dtype
        self.dim = dim
        self.b = jnp.zeros((dim,), dtype)
        self.c = jnp.zeros((), dtype)

    def __call__(self, z: Float[Array, " dim"]) -> Scalar:
        _check_input(self, z)
        return self.b @ z + self.c


class MLPLogRatio(AbstractLogRatio):
    r"""$h(z)$ = an MLP (SiLU) with a zero-initialised last layer, so a fresh ratio is 1."""

    dim: int = eqx.field(static=True)
    mlp: eqx.nn.MLP

    def __init__(self, dim: int, width: int = 64, depth: int = 2, *, key: PRNGKeyArray):
        _check_dim("MLPLogRatio", dim)
        for name, v in (("width", width), ("depth", depth)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"MLPLogRatio needs `{name}` to be an int >= 1; got {name}={v!r}")
        mlp = eqx.nn.MLP(dim, "scalar", width, depth, activation=jax.nn.silu, key=key)
        last = mlp.layers[-1]
        self.dim = dim
        self.mlp = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias),
            mlp,
            (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
        )

    def __call__(self, z: Float[Array, " dim"]) -> Scalar:
        _check_input(self, z)
        return self.mlp(z)


def _check_input(model: AbstractLogRatio, z: Array) -> None:
    if z.shape != (model.dim,):
        raise ValueError(f"{type(model).__name__}: `z` must be one vector of shape ({model.dim},); got {z.shape}")


# ----------------------------------------------------------------------------------------------------------------
# the NCE objective, its standard errors, and fitting
# ----------------------------------------------------------------------------------------------------------------


def _check_samples(name: str, x: Array, dim: int) -> None:
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"`{name}` must be samples of shape (num, {dim}); got shape {x.shape}")


def _per_sample_losses(log_ratio, target, reference):
    """-log sigma(G(x_i)) and -log sigma(-G(y_j)) with G = h - log nu."""
    log_nu = jnp.log(reference.shape[0] / target.shape[0]).astype(target.dtype)
    g_target = jax.vmap(log_ratio)(target) - log_nu
    g_reference = jax.vmap(log_ratio)(reference) - log_nu
    return jax.nn.softplus(-g_target), jax.nn.softplus(g_reference)


def nce_loss(log_ratio: AbstractLogRatio, target: Float[Array, "n dim"], reference: Float[Array, "m dim"]) -> Scalar:
    r"""The NCE (logistic) loss
    $J(h) = -\frac1n\sum_i \log\sigma(G(x_i)) - \frac{\nu}{m}\sum_j \log\sigma(-G(y_j))$, $G = h - \log\nu$,
    $\nu = m/n$, for target samples $x_i \sim q$ and reference samples $y_j \sim p$. Minimised by
    $h = \log q/p$ (Gutmann & Hyvärinen 2010, scaled by $1/n$)."""
    _check_samples("target", target, log_ratio.dim)
    _check_samples("reference", reference, log_ratio.dim)
    a, b = _per_sample_losses(log_ratio, target, reference)
    nu = reference.shape[0] / target.shape[0]
    return jnp.mean(a) + nu * jnp.mean(b)


def nce_standard_errors(
    log_ratio: AbstractLogRatio, target: Float[Array, "n dim"], reference: Float[Array, "m dim"]
) -> PyTree:
    r"""Asymptotic standard errors of the NCE estimate at a minimiser `log_ratio` of `nce_loss`, by the
    sandwich formula $H^{-1}\,[\mathrm{Cov}_q(\nabla a)/n + \nu^2 \mathrm{Cov}_p(\nabla b)/m]\,H^{-1}$ with $H$
    the Hessian of $J$ and $a$, $b$ the per-sample losses of each class (the two samples are independent and
    of fixed sizes, so the covariances are taken within each class). Returns a pytree like `log_ratio` with
    the standard errors in place of its parameters (None elsewhere). Meant for models with few parameters (it
    builds the dense Hessian). The pseudo-inverse of $H$ is used, so a direction the loss does not see (the
    antisymmetric part of `QuadraticLogRatio.w`) gets no variance: read standard errors of identifiable
    parameters only."""
    _check_samples("target", target, log_ratio.dim)
    _check_samples("reference", reference, log_ratio.dim)
    params, static = eqx.partition(log_ratio, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    n, m = target.shape[0], reference.shape[0]
    nu = m / n

    log_nu = jnp.log(nu).astype(target.dtype)

    def h(theta, z):
        return eqx.combine(unravel(theta), static)(z) - log_nu

    def loss(theta):
        a = jax.nn.softplus(-jax.vmap(h, (None, 0))(theta, target))
        b = jax.nn.softplus(jax.vmap(h, (None, 0))(theta, reference))
        return jnp.mean(a) + nu * jnp.mean(b)

    hess = jax.hessian(loss)(flat)
    # per-sample gradients: d softplus(-G)/dtheta = -sigma(-G) dG/dtheta, d softplus(G)/dtheta = sigma(G) dG/dtheta
    grad_h = jax.vmap(jax.grad(h), (None, 0))
    ga = -jax.nn.sigmoid(-jax.vmap(h, (None, 0))(flat, target))[:, None] * grad_h(flat, target)  # (n, P)
    gb = jax.nn.sigmoid(jax.vmap(h, (None, 0))(flat, reference))[:, None] * grad_h(flat, reference)  # (m, P)
    ga = ga - jnp.mean(ga, axis=0, keepdims=True)
    gb = gb - jnp.mean(gb, axis=0, keepdims=True)
    meat = ga.T @ ga / (n - 1) / n + nu**2 * (gb.T @ gb) / (m - 1) / m
    hinv = jnp.linalg.pinv(hess)
    cov = hinv @ meat @ hinv.T
    return unravel(jnp.sqrt(jnp.diagonal(cov)))


def train_ratio(
    log_ratio: AbstractLogRatio,
    target: Float[Array, "n dim"],
    reference: Float[Array, "m dim"],
    *,
    optimiser: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    key: PRNGKeyArray,
) -> tuple[AbstractLogRatio, Float[Array, " num_steps"]]:
    """Minimise `nce_loss` by `optimiser` on minibatches of `batch_size` drawn with replacement from each of the
    two sample pools (equal sizes, so nu = 1 per batch), as one `lax.scan` of `num_steps` steps. Returns the
    trained log-ratio and the loss of each step."""
    _check_samples("target", target, log_ratio.dim)
    _check_samples("reference", reference, log_ratio.dim)
    for name, v in (("num_steps", num_steps), ("batch_size", batch_size)):
        if not (isinstance(v, int) and v >= 1):
            raise ValueError(f"train_ratio needs `{name}` to be an int >= 1; got {name}={v!r}")
    params, static = eqx.partition(log_ratio, eqx.is_inexact_array)

    def loss_fn(p, x, y):
        return nce_loss(eqx.combine(p, static), x, y)

    def step(carry, k):
        p, opt_state = carry
        kx, ky = jax.random.split(k)
        x = target[jax.random.randint(kx, (batch_size,), 0, target.shape[0])]
        y = reference[jax.random.randint(ky, (batch_size,), 0, reference.shape[0])]
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, opt_state = optimiser.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimiser.init(params)), jax.random.split(key, num_steps))
    return eqx.combine(params, static), losses


# ----------------------------------------------------------------------------------------------------------------
# the multi-stage prior and how to sample it
# ----------------------------------------------------------------------------------------------------------------


class MultiStagePrior(eqx.Module):
    r"""$p_K(z) \propto p_0(z) \prod_{k=1}^K r_k(z)$ with $p_0 = N(0, I_{dim})$ and $\log r_k$ = `ratios[k]`
    (Xiao & Han 2022). With no ratios it is $p_0$ (and then normalised)."""

    dim: int = eqx.field(static=True)
    ratios: tuple[AbstractLogRatio, ...]

    def __init__(self, dim: int, ratios: tuple[AbstractLogRatio, ...] = ()):
        _check_dim("MultiStagePrior", dim)
        ratios = tuple(ratios)
        for i, r in enumerate(ratios):
            if not isinstance(r, AbstractLogRatio):
                raise TypeError(f"MultiStagePrior: ratios[{i}] must be an AbstractLogRatio; got {type(r).__name__}")
            if r.dim != dim:
                raise ValueError(f"MultiStagePrior: ratios[{i}].dim={r.dim} but the prior has dim={dim}")
        self.dim = dim
        self.ratios = ratios

    @property
    def num_stages(self) -> int:
        return len(self.ratios)

    def add_stage(self, log_ratio: AbstractLogRatio) -> "MultiStagePrior":
        """This prior times one more ratio."""
        return MultiStagePrior(self.dim, (*self.ratios, log_ratio))

    def base_log_prob(self, z: Float[Array, " dim"]) -> Scalar:
        r"""$\log p_0(z) = -\tfrac12|z|^2 - \tfrac{d}{2}\log 2\pi$."""
        return -0.5 * jnp.sum(z**2) - 0.5 * self.dim * jnp.log(2 * jnp.pi).astype(z.dtype)

    def log_ratio(self, z: Float[Array, " dim"]) -> Scalar:
        r"""$\sum_k \log r_k(z)$ (0 with no stages)."""
        if z.shape != (self.dim,):
            raise ValueError(f"MultiStagePrior: `z` must have shape ({self.dim},); got {z.shape}")
        return sum((r(z) for r in self.ratios), jnp.zeros((), z.dtype))

    def unnormalised_log_prob(self, z: Float[Array, " dim"]) -> Scalar:
        r"""$\log p_0(z) + \sum_k \log r_k(z)$; equal to $\log p_K(z) + \log Z_K$."""
        return self.base_log_prob(z) + self.log_ratio(z)

    def score(self, z: Float[Array, " dim"]) -> Float[Array, " dim"]:
        r"""$\nabla_z \log p_K(z) = -z + \sum_k \nabla \log r_k(z)$."""
        return jax.grad(self.unnormalised_log_prob)(z)

    def gaussian(self) -> tuple[Float[Array, " dim"], Float[Array, "dim dim"], Scalar]:
        r"""When every ratio is a `QuadraticLogRatio` or `LinearLogRatio` ($S_k = 0$), $p_K = N(m, C)$ exactly:
        returns $(m, C, \log Z_K)$ with $C^{-1} = I + \sum_k S_k$, $m = C \sum_k b_k$, and
        $\log Z_K = \log\int p_0 \prod r_k = \sum_k c_k - \tfrac12\log\det C^{-1} + \tfrac12 m^\top C^{-1} m$.
        Raises `TypeError` otherwise and `eqx.error_if`s when $C^{-1}$ is not positive definite."""
        bad = [type(r).__name__ for r in self.ratios if not isinstance(r, QuadraticLogRatio | LinearLogRatio)]
        if bad:
            raise TypeError(f"MultiStagePrior.gaussian needs QuadraticLogRatio or LinearLogRatio stages; got {bad}")
        eye = jnp.eye(self.dim)
        if self.ratios:
            eye = eye.astype(self.ratios[0].b.dtype)
        prec = eye + sum((r.precision for r in self.ratios if isinstance(r, QuadraticLogRatio)), jnp.zeros_like(eye))
        lin = sum((r.b for r in self.ratios), jnp.zeros(self.dim, eye.dtype))
        const = sum((r.c for r in self.ratios), jnp.zeros((), eye.dtype))
        evals, evecs = jnp.linalg.eigh(prec)
        evals = eqx.error_if(evals, jnp.min(evals) <= 0, "MultiStagePrior.gaussian: the precision is not positive")
        cov = (evecs / evals[None, :]) @ evecs.T
        mean = cov @ lin
        log_z = const - 0.5 * jnp.sum(jnp.log(evals)) + 0.5 * mean @ lin
        return mean, cov, log_z


class AbstractPriorSampling(eqx.Module):
    """How to draw samples of a `MultiStagePrior` (between NCE stages, and to sample a trained prior)."""

    @abc.abstractmethod
    def __call__(
        self, prior: MultiStagePrior, init: Float[Array, "num dim"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "num dim"], Float[Array, ""]]:
        """Samples of `prior`, one per row of `init` (a chain's starting point; ignored by exact samplers), and
        the mean acceptance rate (1 for exact or unadjusted samplers)."""


class ExactGaussianSampling(AbstractPriorSampling):
    """Exact samples of a prior whose stages are all quadratic or linear (a Gaussian; `MultiStagePrior.gaussian`)."""

    def __call__(self, prior, init, *, key):
        mean, cov, _ = prior.gaussian()
        evals, evecs = jnp.linalg.eigh(cov)
        root = evecs * jnp.sqrt(jnp.clip(evals, 0.0))[None, :]
        eps = jax.random.normal(key, init.shape, init.dtype)
        return mean[None] + eps @ root.T, jnp.ones((), init.dtype)


class ChainSampling(AbstractPriorSampling):
    r"""`num_steps` of an MCMC `kernel` (`MALA`, `HMC`, `UnadjustedLangevin` from the energy family's `mcmc`) per
    chain, one chain per row of `init`, on $\log p_0 + \sum_k \log r_k$."""

    kernel: AbstractMCMCKernel
    num_steps: int = eqx.field(static=True)

    def __check_init__(self):
        if not isinstance(self.kernel, AbstractMCMCKernel):
            raise TypeError(f"ChainSampling needs `kernel` to be an AbstractMCMCKernel; got {self.kernel!r}")
        if not (isinstance(self.num_steps, int) and self.num_steps >= 1):
            raise ValueError(f"ChainSampling needs `num_steps` to be an int >= 1; got num_steps={self.num_steps!r}")

    def __call__(self, prior, init, *, key):
        def one(x0, k):
            return mcmc(self.kernel, prior.unnormalised_log_prob, x0, num_steps=self.num_steps, key=k)

        res = jax.vmap(one)(init, jax.random.split(key, init.shape[0]))
        return res.position, jnp.mean(res.acceptance_rate)


# ----------------------------------------------------------------------------------------------------------------
# multi-stage fitting
# ----------------------------------------------------------------------------------------------------------------


class StageInfo(eqx.Module):
    """What one NCE stage saw: its loss per step, the reference samples (of the prior before the stage) and the
    sampler's acceptance rate when drawing them."""

    losses: Float[Array, " num_steps"]
    reference: Float[Array, "num dim"]
    acceptance_rate: Float[Array, ""]


def fit_multistage(
    prior: MultiStagePrior,
    make_ratio: Callable[[PRNGKeyArray], AbstractLogRatio],
    target: Float[Array, "n dim"],
    *,
    num_stages: int,
    sampling: AbstractPriorSampling,
    optimiser: optax.GradientTransformation,
    num_steps: int,
    batch_size: int,
    num_reference: int | None = None,
    key: PRNGKeyArray,
) -> tuple[MultiStagePrior, list[StageInfo]]:
    r"""Adaptive multi-stage NCE (Xiao & Han 2022): for $k = 1..K$ draw `num_reference` samples of the current
    prior $p_{k-1}$ by `sampling` (chains start at the previous stage's samples, the first from exact $p_0$
    draws), fit $h_k = \log r_k \approx \log q / p_{k-1}$ by `train_ratio` between `target` and them, and set
    $p_k = p_{k-1} r_k$. `make_ratio(key)` makes each stage's fresh log-ratio (start it at 0). `num_stages=1` is
    single-stage NCE against $p_0$ (when `prior` has no stages). Returns the prior with the new stages and each
    stage's `StageInfo`."""
    if not (isinstance(num_stages, int) and num_stages >= 1):
        raise ValueError(f"fit_multistage needs `num_stages` to be an int >= 1; got num_stages={num_stages!r}")
    if not isinstance(sampling, AbstractPriorSampling):
        raise TypeError(f"`sampling` must be an AbstractPriorSampling; got {type(sampling).__name__}")
    _check_samples("target", target, prior.dim)
    num_reference = target.shape[0] if num_reference is None else num_reference
    k_init, key = jax.random.split(key)
    reference = jax.random.normal(k_init, (num_reference, prior.dim), target.dtype)
    acceptance = jnp.ones((), target.dtype)
    if prior.num_stages:
        reference, acceptance = _sample(sampling, prior, reference, jax.random.fold_in(k_init, 1))
    infos = []
    for stage in range(num_stages):
        k_make, k_train, k_sample = jax.random.split(jax.random.fold_in(key, stage), 3)
        ratio = make_ratio(k_make)
        if not isinstance(ratio, AbstractLogRatio) or ratio.dim != prior.dim:
            raise TypeError(f"make_ratio must return an AbstractLogRatio of dim {prior.dim}; got {ratio!r}")
        ratio, losses = _train(ratio, target, reference, optimiser, num_steps, batch_size, k_train)
        infos.append(StageInfo(losses, reference, acceptance))
        prior = prior.add_stage(ratio)
        if stage + 1 < num_stages:
            reference, acceptance = _sample(sampling, prior, reference, k_sample)
    return prior, infos


@eqx.filter_jit
def _sample(sampling, prior, init, key):
    return sampling(prior, init, key=key)


@eqx.filter_jit
def _train(ratio, target, reference, optimiser, num_steps, batch_size, key):
    return train_ratio(
        ratio, target, reference, optimiser=optimiser, num_steps=num_steps, batch_size=batch_size, key=key
    )
