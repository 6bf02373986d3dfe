"""From continuous densities to discrete data: data scaling and dequantisation bounds."""

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._misc import check_int
from .._sde import AbstractSDE


LogDensity = Callable[[Float[Array, " batch *data"], PRNGKeyArray], Array]


class AffineScaling(eqx.Module):
    r"""Where discrete data live in model space: a level $k \in \{0, \dots, K-1\}$ occupies the bin
    $[\text{shift} + \text{scale}\,k,\ \text{shift} + \text{scale}\,(k+1))$, i.e. $x = \text{shift} + \text{scale}\,z$
    for the dequantised value $z = k + u$, $u \in [0, 1)$.

    `AffineScaling.symmetric(K)` is the usual $[-1, 1]$ convention (scale $2/K$, shift $-1$), which is what
    score-SDE's $(255\,x + u)/256$ followed by $2y - 1$ amounts to.
    """

    scale: float = eqx.field(static=True)
    shift: float = eqx.field(default=0.0, static=True)

    def __check_init__(self):
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise ValueError(f"AffineScaling needs a finite non-zero `scale`; got scale={self.scale}")
        if not math.isfinite(self.shift):
            raise ValueError(f"AffineScaling needs a finite `shift`; got shift={self.shift}")

    @classmethod
    def symmetric(cls, num_levels: int) -> "AffineScaling":
        """K levels spread over [-1, 1]."""
        return cls(scale=2.0 / num_levels, shift=-1.0)

    def __call__(self, z: Array) -> Array:
        """Model-space value of the dequantised level z."""
        return self.shift + self.scale * z


class AbstractDequantisation(eqx.Module):
    r"""A Monte Carlo lower bound on the log-probability $\log P(k)$ of discrete data under a continuous model.

    `log_prob_bound(log_density, levels, num_levels, scaling, key)` returns estimates of shape
    `(num_samples, batch)` whose expectation is at most $\log P(k) \le 0$, so bits/dim is non-negative in
    expectation -- never the negative numbers that come from evaluating a density at discrete points
    (score_sde issue 24, score_sde_pytorch issue 51).
    """

    num_samples: eqx.AbstractVar[int]

    @abc.abstractmethod
    def log_prob_bound(
        self,
        log_density: LogDensity,
        levels: Int[Array, " batch *data"],
        num_levels: int,
        scaling: AffineScaling,
        key: PRNGKeyArray,
    ) -> Float[Array, " samples batch"]:
        """Per-sample estimates of a lower bound on log P(levels), nats."""


class UniformDequantisation(AbstractDequantisation):
    r"""$\log P(k) \ge E_{u \sim U[0,1)^d}[\log p_x(\text{shift} + \text{scale}(k+u))] + d\log|\text{scale}|$.

    Jensen's inequality on $P(k) = \int_{[0,1)^d} p_z(k + u)\,du$ with $p_z = p_x\,|\text{scale}|^d$ (the
    bin width enters through the Jacobian of the scaling; Theis et al., 2016; Ho et al., 2019). A density that
    is uniform over the data range gives exactly $\log_2 K$ bits/dim.
    """

    num_samples: int = eqx.field(default=1, static=True)

    def __check_init__(self):
        check_int("UniformDequantisation", "num_samples", self.num_samples, 1)

    def log_prob_bound(
        self,
        log_density: LogDensity,
        levels: Int[Array, " batch *data"],
        num_levels: int,
        scaling: AffineScaling,
        key: PRNGKeyArray,
    ) -> Float[Array, " samples batch"]:
        d = math.prod(levels.shape[1:])
        dtype = jnp.result_type(float)
        log_jacobian = d * math.log(abs(scaling.scale))

        def one(k):
            k_noise, k_density = jax.random.split(k)
            u = jax.random.uniform(k_noise, levels.shape, dtype)
            return jnp.asarray(log_density(scaling(levels.astype(dtype) + u), k_density)) + log_jacobian

        # A Python loop, not vmap: each call then reuses the compiled solve of `log_density` for this shape.
        return jnp.stack([one(k) for k in jax.random.split(key, self.num_samples)])


class DiscretisedBound(AbstractDequantisation):
    r"""The variational bound of Variational Diffusion Models (Kingma et al., 2021) with a categorical decoder.

    With $q(z \mid k) = N(\alpha c_k, \sigma^2 I)$ at $t_0$ ($c_k$ the bin centres, $\alpha, \sigma$ of `sde`
    at `t0`), $p_{t_0}$ the model density and the decoder $P(k_i \mid z_i) \propto N(z_i; \alpha c_{k_i}, \sigma^2)$
    normalised over the $K$ levels of each coordinate:
    $$\log P(k) \ge E_q[\log p_{t_0}(z) + \textstyle\sum_i \log P(k_i \mid z_i) - \log q(z \mid k)].$$
    Every term is a proper (normalised) model of the discrete data, so the bound is at most 0. `log_density`
    must be the model's density at the same `t0` (the default of `log_likelihood` is `sde.t0`, as here).
    """

    sde: AbstractSDE
    t0: float | None = eqx.field(default=None, static=True)
    num_samples: int = eqx.field(default=1, static=True)

    def __check_init__(self):
        check_int("DiscretisedBound", "num_samples", self.num_samples, 1)
        if self.t0 is not None and not (0.0 < self.t0 < self.sde.T):
            raise ValueError(f"DiscretisedBound needs 0 < t0 < T = {self.sde.T}; got t0={self.t0}")

    def log_prob_bound(
        self,
        log_density: LogDensity,
        levels: Int[Array, " batch *data"],
        num_levels: int,
        scaling: AffineScaling,
        key: PRNGKeyArray,
    ) -> Float[Array, " samples batch"]:
        dtype = jnp.result_type(float)
        t0 = self.sde.t0 if self.t0 is None else self.t0
        alpha, sigma = self.sde.alpha_sigma(jnp.asarray(t0, dtype))
        centres = scaling(jnp.arange(num_levels, dtype=dtype) + 0.5)  # (K,)
        x_c = scaling(levels.astype(dtype) + 0.5)
        batch = levels.shape[0]
        d = math.prod(levels.shape[1:])

        def one(k):
            k_noise, k_density = jax.random.split(k)
            eps = jax.random.normal(k_noise, levels.shape, dtype)
            z = alpha * x_c + sigma * eps
            # Decoder logits for every level of every coordinate: (batch, d, K).
            diff = z.reshape(batch, d)[:, :, None] - alpha * centres[None, None, :]
            log_dec = jax.nn.log_softmax(-0.5 * (diff / sigma) ** 2, axis=-1)
            idx = levels.reshape(batch, d, 1).astype(jnp.int32)
            log_decoder = jnp.sum(jnp.take_along_axis(log_dec, idx, axis=-1), axis=(1, 2))
            log_q = -0.5 * jnp.sum(eps.reshape(batch, d) ** 2, axis=1) - d * (
                jnp.log(sigma) + 0.5 * math.log(2 * math.pi)
            )
            return jnp.asarray(log_density(z, k_density)) + log_decoder - log_q

        # A Python loop, not vmap: each call then reuses the compiled solve of `log_density` for this shape.
        return jnp.stack([one(k) for k in jax.random.split(key, self.num_samples)])
