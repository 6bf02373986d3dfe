r"""A latent-variable generator $x = g(z) + \sigma\epsilon$ with an energy-based latent prior, learned jointly.

The prior is $p(z) \propto p_0(z)\prod_k r_k(z)$ (a `MultiStagePrior`), trained either

* by adaptive multi-stage NCE (Xiao & Han 2022; `NCEPriorTraining`): stage $k$ fits $\log r_k$ by NCE between
  posterior samples $z \sim p(z \mid x)$ (the aggregate posterior) and samples of the frozen prior $p_{k-1}$,
  while the generator learns under $p_{k-1} r_k$; or
* by maximum likelihood with short-run MCMC (Pang et al. 2020; `MCMCPriorTraining`): one stage $f = \log r_1$,
  $\nabla_\alpha \log p(x) = E_{p(z|x)}[\nabla f] - E_{p_\alpha(z)}[\nabla f]$, prior samples by short-run Langevin
  from $p_0$; or
* not at all (`FixedPriorTraining`: $p = N(0, I)$, alternating back-propagation, Han et al. 2017).

In every case $z \mid x$ is sampled by short-run Langevin from $p_0$ noise on
$\log p(z) - |x - g(z)|^2 / 2\sigma^2$, and the generator takes a gradient step on
$|x - g(z)|^2 / 2\sigma^2$ at those samples.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._custom_types import Scalar
from .mcmc import MALA, langevin_chain, mcmc
from .nce import AbstractLogRatio, MLPLogRatio, MultiStagePrior, nce_loss


def _stop_gradient(tree):
    arrays, rest = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.lax.stop_gradient(arrays), rest)


class MLPGenerator(eqx.Module):
    r"""$g(z)$: an MLP (SiLU) from a latent vector of size `latent_dim` to one example of shape `data_shape`."""

    latent_dim: int = eqx.field(static=True)
    data_shape: tuple[int, ...] = eqx.field(static=True)
    mlp: eqx.nn.MLP

    def __init__(self, latent_dim: int, data_shape: tuple[int, ...], width: int = 128, depth: int = 2, *, key):
        for name, v in (("latent_dim", latent_dim), ("width", width), ("depth", depth)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"MLPGenerator needs `{name}` to be an int >= 1; got {name}={v!r}")
        data_shape = tuple(data_shape)
        if not data_shape or not all(isinstance(s, int) and s >= 1 for s in data_shape):
            raise ValueError(f"MLPGenerator needs `data_shape` to be a tuple of positive ints; got {data_shape!r}")
        size = 1
        for s in data_shape:
            size *= s
        self.latent_dim = latent_dim
        self.data_shape = data_shape
        self.mlp = eqx.nn.MLP(latent_dim, size, width, depth, activation=jax.nn.silu, key=key)

    def __call__(self, z: Float[Array, " latent"]) -> Float[Array, "*data"]:
        if z.shape != (self.latent_dim,):
            raise ValueError(f"MLPGenerator: `z` must have shape ({self.latent_dim},); got {z.shape}")
        return self.mlp(z).reshape(self.data_shape)


class LatentModel(eqx.Module):
    r"""Generator `generator`, observation noise std `noise_std` ($\sigma$), and the latent prior
    `prior` $\cdot\, r_{\text{current}}$: the frozen stages in `prior` and the stage being trained in `current`
    (None when there is none)."""

    generator: MLPGenerator
    prior: MultiStagePrior
    current: AbstractLogRatio | None
    noise_std: float = eqx.field(static=True)

    def __check_init__(self):
        if not self.noise_std > 0:
            raise ValueError(f"LatentModel needs `noise_std` > 0; got {self.noise_std!r}")
        if self.prior.dim != self.generator.latent_dim:
            raise ValueError(
                f"LatentModel: the prior has dim {self.prior.dim} but the generator's latent_dim is "
                f"{self.generator.latent_dim}"
            )

    @property
    def full_prior(self) -> MultiStagePrior:
        """The prior in use: the frozen stages times the current one."""
        return self.prior if self.current is None else self.prior.add_stage(self.current)

    def log_likelihood(self, z: Float[Array, " latent"], x: Float[Array, "*data"]) -> Scalar:
        r"""$\log N(x; g(z), \sigma^2 I)$ up to its constant: $-|x - g(z)|^2 / 2\sigma^2$."""
        return -0.5 * jnp.sum((x - self.generator(z)) ** 2) / self.noise_std**2

    def log_joint(self, z: Float[Array, " latent"], x: Float[Array, "*data"]) -> Scalar:
        r"""$\log p(z) + \log p(x \mid z)$ up to constants (unnormalised posterior of $z$)."""
        return self.full_prior.unnormalised_log_prob(z) + self.log_likelihood(z, x)


def latent_posterior_samples(
    model: LatentModel,
    x: Float[Array, " batch *data"],
    *,
    step_size: float,
    num_steps: int,
    key: PRNGKeyArray,
) -> Float[Array, "batch latent"]:
    r"""Short-run Langevin (`langevin_chain`) on $\log p(z) + \log p(x \mid z)$ from $z_0 \sim N(0, I)$, one chain
    per example (Pang et al. 2020). Gradients are stopped: the samples are data for the losses."""
    model = _stop_gradient(model)
    k0, k1 = jax.random.split(key)
    z0 = jax.random.normal(k0, (x.shape[0], model.generator.latent_dim), x.dtype)

    def one(z, xi, k):
        return langevin_chain(lambda zz: model.log_joint(zz, xi), z, step_size=step_size, num_steps=num_steps, key=k)

    return jax.vmap(one)(z0, x, jax.random.split(k1, x.shape[0]))


def latent_prior_samples(
    prior: MultiStagePrior,
    num: int,
    *,
    step_size: float,
    num_steps: int,
    key: PRNGKeyArray,
    exact_kernel: bool = False,
    dtype=None,
) -> Float[Array, "num latent"]:
    r"""Samples of `prior` by `num_steps` of short-run Langevin from $N(0, I)$ (or of MALA with `exact_kernel`,
    step size `step_size` in `langevin_chain`'s convention). A prior with no stages is sampled exactly."""
    k0, k1 = jax.random.split(key)
    z0 = jax.random.normal(k0, (num, prior.dim), dtype)
    if prior.num_stages == 0:
        return z0
    prior = _stop_gradient(prior)

    def one(z, k):
        if exact_kernel:
            return mcmc(MALA(step_size), prior.unnormalised_log_prob, z, num_steps=num_steps, key=k).position
        return langevin_chain(prior.unnormalised_log_prob, z, step_size=step_size, num_steps=num_steps, key=k)

    return jax.vmap(one)(z0, jax.random.split(k1, num))


def latent_generator_loss(
    model: LatentModel, z: Float[Array, "batch latent"], x: Float[Array, " batch *data"]
) -> Scalar:
    r"""$\frac1B\sum_i |x_i - g(z_i)|^2 / 2\sigma^2$: minus the mean log-likelihood at posterior samples."""
    return -jnp.mean(jax.vmap(model.log_likelihood)(z, x))


# ----------------------------------------------------------------------------------------------------------------
# how the prior is trained
# ----------------------------------------------------------------------------------------------------------------


class AbstractPriorTraining(eqx.Module):
    """How the latent prior learns during joint training (`train_latent_step`)."""

    @abc.abstractmethod
    def prior_loss(
        self, current: AbstractLogRatio, model: LatentModel, z_post: Array, reference: Array, key: PRNGKeyArray
    ) -> Scalar:
        """The loss whose gradient in `current` (the trained stage) is the prior's update, given posterior samples
        `z_post` and `reference` samples of the frozen prior (NCE only)."""


class FixedPriorTraining(AbstractPriorTraining):
    """No prior learning: $p = N(0, I)$ (give the model `current=None`)."""

    def prior_loss(self, current, model, z_post, reference, key):
        return jnp.zeros((), z_post.dtype)


class NCEPriorTraining(AbstractPriorTraining):
    r"""Stage $k$ of adaptive multi-stage NCE: `nce_loss` of the current $\log r_k$ between the posterior samples
    and samples of the frozen prior $p_{k-1}$ (`reference`, drawn once per stage by `draw_reference`)."""

    def prior_loss(self, current, model, z_post, reference, key):
        return nce_loss(current, z_post, reference)


class MCMCPriorTraining(AbstractPriorTraining):
    r"""Pang et al. (2020): $\frac1B\sum f(z^-) - \frac1B\sum f(z^+)$ with $z^+$ posterior samples and $z^-$ from
    `num_steps` of short-run Langevin (step `step_size`) on $p_0 e^f$ from $N(0, I)$; its gradient is minus the
    log-likelihood gradient of the prior's parameters."""

    step_size: float = 0.4
    num_steps: int = eqx.field(static=True, default=60)

    def prior_loss(self, current, model, z_post, reference, key):
        prior = MultiStagePrior(current.dim, (*model.prior.ratios, current))
        z_neg = latent_prior_samples(
            prior, z_post.shape[0], step_size=self.step_size, num_steps=self.num_steps, key=key, dtype=z_post.dtype
        )
        return jnp.mean(jax.vmap(current)(z_neg)) - jnp.mean(jax.vmap(current)(z_post))


class LatentStepInfo(eqx.Module):
    """Losses of one joint step: the generator's (per example), the prior's, and the posterior samples' mean norm."""

    generator_loss: Scalar
    prior_loss: Scalar
    posterior_norm: Scalar


def train_latent_step(
    model: LatentModel,
    opt_state: PyTree,
    x: Float[Array, " batch *data"],
    reference: Float[Array, "num latent"],
    *,
    training: AbstractPriorTraining,
    optimiser: optax.GradientTransformation,
    posterior_step_size: float = 0.1,
    posterior_steps: int = 20,
    key: PRNGKeyArray,
) -> tuple[LatentModel, PyTree, LatentStepInfo]:
    r"""One joint step: posterior samples of `x` under the current prior (`latent_posterior_samples`), then one
    `optimiser` step on generator_loss + the prior's loss (`training.prior_loss`) in the generator and the current
    stage (frozen stages are fixed). `reference` is a pool of samples of the frozen prior (NCE); a batch of the
    batch's size is drawn from it. Non-finite updates are skipped by wrapping `optimiser` in
    `optax.apply_if_finite` (see `init_latent_optimiser`)."""
    k_post, k_ref, k_prior = jax.random.split(key, 3)
    z_post = latent_posterior_samples(model, x, step_size=posterior_step_size, num_steps=posterior_steps, key=k_post)
    ref = reference[jax.random.randint(k_ref, (x.shape[0],), 0, reference.shape[0])]
    params, static = eqx.partition((model.generator, model.current), eqx.is_inexact_array)

    def loss_fn(p):
        generator, current = eqx.combine(p, static)
        m = eqx.tree_at(lambda mm: mm.generator, model, generator)
        gl = latent_generator_loss(m, z_post, x)
        pl = training.prior_loss(current, m, z_post, ref, k_prior) if current is not None else jnp.zeros_like(gl)
        return gl + pl, (gl, pl)

    (_, (gl, pl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimiser.update(grads, opt_state, params)
    generator, current = eqx.combine(optax.apply_updates(params, updates), static)
    model = eqx.tree_at(lambda mm: (mm.generator, mm.current), model, (generator, current), is_leaf=lambda v: v is None)
    info = LatentStepInfo(gl / x[0].size, pl, jnp.mean(jnp.linalg.norm(z_post, axis=-1)))
    return model, opt_state, info


def init_latent_optimiser(
    model: LatentModel,
    generator_optimiser: optax.GradientTransformation,
    prior_optimiser: optax.GradientTransformation,
) -> tuple[optax.GradientTransformation, PyTree]:
    """The optimiser of `train_latent_step` and its state: `generator_optimiser` on the generator and
    `prior_optimiser` on the current stage, wrapped in `optax.apply_if_finite` so that a step with a non-finite
    gradient is skipped (parameters kept). Call again after `add_latent_stage` (the state is per stage)."""
    params = eqx.filter((model.generator, model.current), eqx.is_inexact_array)
    labels = (jax.tree.map(lambda _: "generator", params[0]), jax.tree.map(lambda _: "prior", params[1]))
    opt = optax.apply_if_finite(
        optax.multi_transform({"generator": generator_optimiser, "prior": prior_optimiser}, labels), 10
    )
    return opt, opt.init(params)


def add_latent_stage(model: LatentModel, *, key: PRNGKeyArray, width: int = 64, depth: int = 2) -> LatentModel:
    """Freeze the current stage into the prior (if any) and start a fresh `MLPLogRatio` stage (starting at 0)."""
    prior = model.full_prior
    fresh = MLPLogRatio(prior.dim, width, depth, key=key)
    return LatentModel(model.generator, prior, fresh, model.noise_std)


def latent_reconstruction_error(
    model: LatentModel,
    x: Float[Array, " batch *data"],
    *,
    step_size: float = 0.1,
    num_steps: int = 100,
    key: PRNGKeyArray,
) -> Scalar:
    r"""Mean squared error per element of $g(z)$ against `x`, with $z$ from `num_steps` of posterior Langevin."""
    z = latent_posterior_samples(model, x, step_size=step_size, num_steps=num_steps, key=key)
    return jnp.mean((jax.vmap(model.generator)(z) - x) ** 2)
