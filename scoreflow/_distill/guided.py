r"""Guided distillation, stage 1 (Meng et al., 2023, "On distillation of guided diffusion models"): one
$w$-conditioned student $\hat x(z_t, c, w)$ learns the classifier-free-guided denoiser of a conditional teacher
for every guidance strength $w$ in a range, so that each sampling step costs one evaluation instead of two.

The target is $\tilde x = (1 + w)\,\hat x_c - w\,\hat x_\varnothing$ with $\hat x_c$, $\hat x_\varnothing$ the
teacher's denoisers with the conditioning and with the null one. Denoisers, scores and $v$ are affine in one
another at fixed $(t, z_t)$, so this is `ClassifierFreeGuidance(teacher, c, null, Constant(1 + w)).denoise`
(guidance weight $g = 1 + w$ in scoreflow's convention $s_\varnothing + g(s_c - s_\varnothing)$). Stage 2 is
`progressive_distillation_loss` applied to the stage-1 student, with $w$ in its conditioning (fixed or sampled).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, Scalar, ScalarLike
from .._loss import AbstractWeighting
from .._misc import check_instance, check_real
from .._model import AbstractScoreModel
from .progressive import x_weight
from .weighting import TruncatedSNRWeighting


def guided_distillation_target(
    teacher: AbstractScoreModel,
    t: ScalarLike,
    z_t: Float[Array, "*data"],
    w: ScalarLike,
    cond: Conditioning,
    null: Conditioning,
    *,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "*data"]:
    r"""$(1 + w)\,\hat x(t, z_t, c) - w\,\hat x(t, z_t, \varnothing)$ for **one** example: the teacher's
    classifier-free-guided denoiser at strength $w$ (`cond` = $c$, `null` = $\varnothing$)."""
    x_c = teacher.denoise(t, z_t, cond, key=key)
    x_u = teacher.denoise(t, z_t, null, key=key)
    w = jnp.asarray(w, x_c.dtype)
    return (1 + w) * x_c - w * x_u


def guided_distillation_loss(
    student: AbstractScoreModel,
    teacher: AbstractScoreModel,
    x0: Float[Array, " batch *data"],
    cond: Conditioning,
    *,
    key: PRNGKeyArray,
    null: Conditioning,
    w_min: float = 0.0,
    w_max: float = 4.0,
    weighting: AbstractWeighting = TruncatedSNRWeighting(),
    t0: float | None = None,
) -> Scalar:
    r"""Mean guided-distillation loss over a batch: $E_{t, w, \epsilon}\,w_x(t)\,\|\tilde x - \hat x(t, z_t,
    (c, w))\|^2$ with $t \sim U[t_0, T]$, $w \sim U[w_{\min}, w_{\max}]$ and $\tilde x$ from
    `guided_distillation_target`.

    **Arguments:** `student` (called with the conditioning pair `(c, w)`, `w` a scalar per example; e.g. a
    `ScoreModel` over a `GuidanceWeightMLP`), `teacher` (conditional, accepts `null`), `x0` and `cond` (batched,
    `cond` a pytree with leading batch axis), `key`, `null` (one example's null conditioning), `w_min`, `w_max`,
    `weighting` (eps-space, turned into $x$-space as in `progressive_distillation_loss`), `t0` (default
    `student.sde.t0`). **Returns:** a scalar; the target carries no gradient.
    """
    check_real("guided_distillation_loss", "w_min", w_min, 0.0)
    check_real("guided_distillation_loss", "w_max", w_max, w_min)
    check_instance("guided_distillation_loss", "weighting", weighting, AbstractWeighting, "an AbstractWeighting")
    if x0.ndim < 2:
        raise ValueError(f"`x0` must be a batch of examples, shape (batch, *data); got shape {x0.shape}")
    sde = student.sde
    t0 = float(sde.t0 if t0 is None else t0)
    batch = x0.shape[0]
    k_t, k_w, k_eps, k_model = jax.random.split(key, 4)
    t = jax.random.uniform(k_t, (batch,), x0.dtype, t0, sde.T)
    w = jax.random.uniform(k_w, (batch,), x0.dtype, w_min, w_max)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    keys = jax.random.split(k_model, batch)

    def one(t, w, x, e, c, k):
        alpha, sigma = sde.alpha_sigma(t)
        z_t = alpha * x + sigma * e
        target = jax.lax.stop_gradient(guided_distillation_target(teacher, t, z_t, w, c, null))
        x_hat = student.denoise(t, z_t, (c, w), key=k)
        return x_weight(weighting, sde, t) * jnp.sum((target - x_hat) ** 2)

    return jnp.mean(jax.vmap(one)(t, w, x0, eps, cond, keys))
