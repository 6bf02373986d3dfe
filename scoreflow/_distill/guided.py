r"""Guided distillation, stage 1 (Meng et al., 2023, "On distillation of guided diffusion models"): one
$w$-conditioned student $\hat x(z_t, c, w)$ learns the classifier-free-guided denoiser of a conditional teacher
for every guidance strength $w$ in a range, so that each sampling step costs one evaluation instead of two.

The target is $\tilde x = (1 + w)\,\hat x_c - w\,\hat x_\varnothing$ with $\hat x_c$, $\hat x_\varnothing$ the
teacher's denoisers with the conditioning and with the null one. Denoisers, scores and $v$ are affine in one
another at fixed $(t, z_t)$, so this is `ClassifierFreeGuidance(model, c, null, Constant(1 + w)).denoise`
(guidance weight $g = 1 + w$ in scoreflow's convention $s_\varnothing + g(s_c - s_\varnothing)$), and it is
computed by that wrapper: the teacher is either a `ClassifierFreeGuidance` with `cond=None` (its weight is
replaced by $1 + w$ per example; its `null` and its one-batched-call evaluation of the pair are used) or a plain
conditional model with `null` given. Stage 2 is `progressive_distillation_loss` applied to the stage-1 student,
with $w$ in its conditioning (fixed or sampled; `distill(..., w_range=...)`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, Scalar, ScalarLike
from .._guidance import ClassifierFreeGuidance, Constant
from .._loss import AbstractWeighting
from .._misc import check_instance, check_real
from .._model import AbstractScoreModel
from .progressive import x_weight
from .weighting import TruncatedSNRWeighting


class _FromTeacher:
    def __repr__(self) -> str:
        return "<the teacher's null>"


FROM_TEACHER = _FromTeacher()
"""Default of `null`: taken from a `ClassifierFreeGuidance` teacher."""


def guided_teacher(teacher: AbstractScoreModel, null: Conditioning = FROM_TEACHER) -> ClassifierFreeGuidance:
    """The teacher as a `ClassifierFreeGuidance` that takes its conditioning from each call: `teacher` itself if it
    is one (with `cond=None`; `null` must then be left out), else `ClassifierFreeGuidance(teacher, None, null, .)`
    for a plain conditional model (`null` required)."""
    if isinstance(teacher, ClassifierFreeGuidance):
        if null is not FROM_TEACHER:
            raise ValueError(
                f"guided distillation: the teacher is a ClassifierFreeGuidance, whose null conditioning "
                f"({teacher.null!r}) is used; do not pass null= as well (got null={null!r})"
            )
        if teacher.cond is not None:
            raise ValueError(
                "guided distillation needs a ClassifierFreeGuidance teacher built with cond=None (the conditioning "
                f"comes from the data, one per example); got cond={teacher.cond!r}"
            )
        return teacher
    if not isinstance(teacher, AbstractScoreModel):
        raise TypeError(f"guided distillation needs `teacher` to be an AbstractScoreModel; got teacher={teacher!r}")
    if null is FROM_TEACHER:
        raise ValueError(
            "guided distillation of a plain conditional teacher needs `null`, the conditioning it was trained to "
            "read as 'no condition' (or pass a ClassifierFreeGuidance(model, None, null, weight) as the teacher)"
        )
    return ClassifierFreeGuidance(model=teacher, cond=None, null=null, weight=Constant(1.0))  # pyright: ignore[reportCallIssue]  (sde is its model's)


def guided_distillation_target(
    teacher: AbstractScoreModel,
    t: ScalarLike,
    z_t: Float[Array, "*data"],
    w: ScalarLike,
    cond: Conditioning,
    null: Conditioning = FROM_TEACHER,
    *,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "*data"]:
    r"""$(1 + w)\,\hat x(t, z_t, c) - w\,\hat x(t, z_t, \varnothing)$ for **one** example: the teacher's
    classifier-free-guided denoiser at strength $w$ (`cond` = $c$), computed by `ClassifierFreeGuidance` at
    weight $g = 1 + w$. `teacher`: a `ClassifierFreeGuidance` with `cond=None` (its null is used), or a plain
    conditional model with `null` = $\varnothing$ given."""
    cfg = guided_teacher(teacher, null)
    w = jnp.asarray(w, z_t.dtype)
    return eqx.tree_at(lambda g: g.weight, cfg, Constant(1 + w)).denoise(t, z_t, cond, key=key)


def guided_distillation_loss(
    student: AbstractScoreModel,
    teacher: AbstractScoreModel,
    x0: Float[Array, " batch *data"],
    cond: Conditioning,
    *,
    key: PRNGKeyArray,
    null: Conditioning = FROM_TEACHER,
    w_min: float = 0.0,
    w_max: float = 4.0,
    weighting: AbstractWeighting = TruncatedSNRWeighting(),
    t0: float | None = None,
) -> Scalar:
    r"""Mean guided-distillation loss over a batch: $E_{t, w, \epsilon}\,w_x(t)\,\|\tilde x - \hat x(t, z_t,
    (c, w))\|^2$ with $t \sim U[t_0, T]$, $w \sim U[w_{\min}, w_{\max}]$ and $\tilde x$ from
    `guided_distillation_target`.

    **Arguments:** `student` (called with the conditioning pair `(c, w)`, `w` a scalar per example; e.g. a
    `ScoreModel` over a `GuidanceWeightNet`), `teacher` (a `ClassifierFreeGuidance` with `cond=None`, or a plain
    conditional model that accepts `null`), `x0` and `cond` (batched, `cond` a pytree with leading batch axis),
    `key`, `null` (one example's null conditioning; left out for a `ClassifierFreeGuidance` teacher), `w_min`,
    `w_max`,
    `weighting` (eps-space, turned into $x$-space as in `progressive_distillation_loss`), `t0` (default
    `student.sde.t0`). **Returns:** a scalar; the target carries no gradient.
    """
    check_real("guided_distillation_loss", "w_min", w_min, 0.0)
    check_real("guided_distillation_loss", "w_max", w_max, w_min)
    check_instance("guided_distillation_loss", "weighting", weighting, AbstractWeighting, "an AbstractWeighting")
    if x0.ndim < 2:
        raise ValueError(f"`x0` must be a batch of examples, shape (batch, *data); got shape {x0.shape}")
    teacher = guided_teacher(teacher, null)
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
        target = jax.lax.stop_gradient(guided_distillation_target(teacher, t, z_t, w, c))
        x_hat = student.denoise(t, z_t, (c, w), key=k)
        return x_weight(weighting, sde, t) * jnp.sum((target - x_hat) ** 2)

    return jnp.mean(jax.vmap(one)(t, w, x0, eps, cond, keys))
