r"""Progressive distillation (Salimans & Ho, 2022): a student of $N$ DDIM steps learns two of its teacher's.

On the teacher's grid of $2N$ steps (see `scoreflow._distill.grid` for the convention) a student step goes from
$t = t_{2i}$ to $s = t_{2i+2}$ through the teacher's midpoint $t' = t_{2i+1}$. With $z_t = \alpha_t x_0 +
\sigma_t\epsilon$, the teacher's two deterministic DDIM steps give $z_{t'}$ and $z_s$, and the one $\tilde x$
for which a single DDIM step $z_s = \alpha_s\tilde x + (\sigma_s/\sigma_t)(z_t - \alpha_t\tilde x)$ lands on
the same point is
$$\tilde x = \frac{z_s - (\sigma_s/\sigma_t)\,z_t}{\alpha_s - (\sigma_s/\sigma_t)\,\alpha_t}.$$
The student's denoiser $\hat x(z_t)$ regresses it with an $x$-space weight (`TruncatedSNRWeighting`, `VWeighting`).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Conditioning, Scalar
from .._loss import AbstractWeighting
from .._misc import check_instance, check_int
from .._model import AbstractScoreModel
from .._sampler._steps import ddim_step
from .._sampler.discretisation import GRID, AbstractTimeDiscretisation, UniformTime
from .._sde import AbstractSDE
from .distilled import Distilled
from .weighting import TruncatedSNRWeighting


def x_weight(weighting: AbstractWeighting, sde: AbstractSDE, t: Scalar) -> Scalar:
    r"""The $x$-space weight $w(t)\,e^{\lambda(t)}$ of an eps-space weighting $w$."""
    return weighting.weight(sde, t) * jnp.exp(sde.log_snr(t))


def progressive_distillation_target(
    teacher: AbstractScoreModel,
    t: Scalar,
    mid: Scalar,
    s: Scalar,
    z_t: Float[Array, "*data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "*data"]:
    r"""$\tilde x$ for **one** example: the $x$ whose single DDIM step $t \to s$ from `z_t` equals the teacher's two
    DDIM steps $t \to$ `mid` $\to s$ (see the module docstring)."""
    sde = teacher.sde
    score = lambda tt, x: jnp.asarray(teacher(tt, x, cond, key=key), x.dtype)
    z_mid = ddim_step(score, sde, t, mid, z_t, 0.0, None)
    z_s = ddim_step(score, sde, mid, s, z_mid, 0.0, None)
    alpha_t, sigma_t = sde.alpha_sigma(t)
    alpha_s, sigma_s = sde.alpha_sigma(s)
    ratio = sigma_s / sigma_t
    return (z_s - ratio * z_t) / (alpha_s - ratio * alpha_t)


def _check_teacher(teacher, num_steps: int) -> None:
    if isinstance(teacher, Distilled) and teacher.grid.steps != 2 * num_steps:
        raise ValueError(
            f"progressive distillation to num_steps={num_steps} needs a teacher of 2 * num_steps = {2 * num_steps} "
            f"steps; the teacher is a Distilled model of {teacher.grid.steps} steps"
        )


def progressive_distillation_loss(
    student: AbstractScoreModel,
    teacher: AbstractScoreModel,
    x0: Float[Array, " batch *data"],
    cond: Conditioning = None,
    *,
    key: PRNGKeyArray,
    num_steps: int,
    weighting: AbstractWeighting = TruncatedSNRWeighting(),
    discretisation: AbstractTimeDiscretisation = UniformTime(),
    t0: float | None = None,
) -> Scalar:
    r"""Mean progressive-distillation loss over a batch (Salimans & Ho, 2022, algorithm 2):
    $E_{i, \epsilon}\,w_x(t)\,\|\tilde x - \hat x(z_t)\|^2$ with $i$ uniform on the student's `num_steps` steps,
    $t = t_{2i}$ on the teacher's grid `discretisation.times(sde, 2 * num_steps, t0)` and $w_x$ the $x$-space form
    of `weighting` (default truncated SNR $\max(\mathrm{SNR}, 1)$; `VWeighting()` gives SNR + 1).

    **Arguments:** `student` (trained; $\hat x$ = `student.denoise`, typically a `ScoreModel` with
    `VPrediction()` initialised from the teacher), `teacher` (fixed; a `Distilled` teacher must have
    `2 * num_steps` steps), `x0` (clean examples, leading batch axis), `cond` (batched conditioning or None; given
    to both), `key`, `num_steps` (the student's step count $N$), `weighting`, `discretisation`, `t0` (end of the
    grid, default `student.sde.t0`). **Returns:** a scalar. The teacher's target carries no gradient.
    """
    check_int("progressive_distillation_loss", "num_steps", num_steps, 1)
    check_instance("progressive_distillation_loss", "weighting", weighting, AbstractWeighting, "an AbstractWeighting")
    check_instance("progressive_distillation_loss", "discretisation", discretisation, AbstractTimeDiscretisation, GRID)
    if x0.ndim < 2:
        raise ValueError(f"`x0` must be a batch of examples, shape (batch, *data); got shape {x0.shape}")
    _check_teacher(teacher, num_steps)
    sde = student.sde
    t0 = float(sde.t0 if t0 is None else t0)
    batch = x0.shape[0]
    fine = discretisation.times(sde, 2 * num_steps, t0).astype(x0.dtype)
    k_i, k_eps, k_model = jax.random.split(key, 3)
    i = jax.random.randint(k_i, (batch,), 0, num_steps)
    t, mid, s = fine[2 * i], fine[2 * i + 1], fine[2 * i + 2]
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    keys = jax.random.split(k_model, batch)

    def one(t, mid, s, x, e, c, k):
        alpha, sigma = sde.alpha_sigma(t)
        z_t = alpha * x + sigma * e
        target = jax.lax.stop_gradient(progressive_distillation_target(teacher, t, mid, s, z_t, c))
        x_hat = student.denoise(t, z_t, c, key=k)
        return x_weight(weighting, sde, t) * jnp.sum((target - x_hat) ** 2)

    return jnp.mean(jax.vmap(one)(t, mid, s, x0, eps, cond, keys))
