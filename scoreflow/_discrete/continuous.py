r"""Continuous-time absorbing (masking) diffusion: the $T \to \infty$ limit of `AbsorbingTransition` with the
mutual-information schedule.

The CTMC has rate matrix $R(t) = \beta(t)(\mathbf 1 e_m^\top - I)$ with $\beta(t) = 1/(1 - t)$, so
$q_t = \exp(\int_0^t R) = (1 - t) I + t\, \mathbf 1 e_m^\top$: each variable is masked independently with
probability $t$. With the reverse step of `PosteriorMixture` (which equals `JointMixture` here) the negative ELBO is
$\int_0^1 \frac{1}{t}\, \mathbb E_{q_t(x_t \mid x_0)}
\big[\sum_{i:\, x_t^i = m} -\log \tilde p_\theta(x_0^i \mid x_t)\big]\, dt$
(Campbell et al., 2022; Shi et al., 2024; Sahoo et al., 2024). Prior and reconstruction terms vanish
($q_1 = e_m$, $q_0 = I$). The discrete bound with $T$ steps is a right-endpoint Riemann sum of this integral.

Uniform rate matrices also define a CTMC ($q_t = e^{-\int\beta} I + (1 - e^{-\int\beta}) \mathbf 1\mathbf 1^\top/S$),
but their ELBO needs the reverse rates $R(y, x)\, q_t(y)/q_t(x)$ for every neighbour $y$ of $x_t$, i.e. ratios
of model marginals that an $x_0$-prediction gives only through an $O(S)$-per-variable sum per neighbour; it is not
provided here. Use `UniformTransition` with large $T$ instead.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Conditioning
from .loss import X0Model
from .process import mask_x0_logits
from .transitions import AbsorbingTransition


def absorbing_ctmc_loss(
    model: X0Model,
    transition: AbsorbingTransition,
    x0: Int[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
) -> Float[Array, ""]:
    r"""Unbiased one-sample estimate, in bits/dim, of the continuous-time negative ELBO above for one example:
    $t \sim \mathcal U(0, 1]$, mask each variable with probability $t$, and weight the masked cross-entropy by
    $1/t$. Only `transition.mask_index` and `num_states` are used (not its discrete schedule); the model is called
    as `model(t, x_t, cond, key=...)` with $t \in (0, 1]$, like the discrete losses with $t/T$."""
    if not jnp.issubdtype(x0.dtype, jnp.integer):
        raise TypeError(f"`x0` must be an integer array of category indices; got dtype {x0.dtype}")
    k_t, k_mask, k_model = jax.random.split(key, 3)
    t = 1.0 - jax.random.uniform(k_t, (), jnp.result_type(float))  # in (0, 1]
    masked = jax.random.bernoulli(k_mask, t, x0.shape)
    x_t = jnp.where(masked, transition.mask_index, x0)
    logits = model(t, x_t, cond, key=k_model)
    expected = x0.shape + (transition.num_states,)
    if logits.shape != expected:
        raise ValueError(f"the model must return x0 logits of shape {expected}; got {logits.shape}")
    log_p0 = jax.nn.log_softmax(mask_x0_logits(transition, logits), axis=-1)
    nll = -jnp.take_along_axis(log_p0, x0[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(masked, nll, 0.0)) / t / (math.log(2.0) * x0.size)
