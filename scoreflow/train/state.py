"""The train state: one pytree holding everything a run needs to continue bit-identically."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree


class TrainState(eqx.Module):
    """Model, optimiser state, EMA copy of the model (or None), step counter and base PRNG key.

    The key never changes: the randomness of step `n` is `fold_in(key, n)`, so a run restored at step `n`
    draws exactly what an uninterrupted run draws.
    """

    model: PyTree
    opt_state: optax.OptState
    ema: PyTree | None
    step: Int[Array, ""]
    key: PRNGKeyArray


def trainable(model: PyTree) -> PyTree:
    """The leaves that are trained: every floating-point array of the model."""
    return eqx.filter(model, eqx.is_inexact_array)


def strong_types(tree: PyTree) -> PyTree:
    """Weakly typed array leaves (e.g. from `jnp.asarray(0.0)`) made strongly typed, dtype unchanged.

    An optimiser update returns strongly typed leaves; without this the second step would see a new input
    signature and compile the whole step again.
    """
    return jax.tree.map(lambda x: x.astype(x.dtype) if eqx.is_array(x) and x.weak_type else x, tree)


def init_state(
    model: PyTree, optimiser: optax.GradientTransformation, *, key: PRNGKeyArray, ema: bool = True
) -> TrainState:
    """A fresh state at step 0. `ema=False` keeps no EMA copy (`state.ema is None`)."""
    model = strong_types(model)
    return TrainState(
        model=model,
        opt_state=optimiser.init(trainable(model)),
        ema=model if ema else None,
        step=jnp.asarray(0, dtype=jnp.int32),
        key=key,
    )


def make_optimiser(
    learning_rate: float = 2e-3,
    *,
    total_steps: int,
    warmup_steps: int = 100,
    end_fraction: float = 0.05,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.99,
) -> optax.GradientTransformation:
    r"""AdamW with linear warm-up then cosine decay to `end_fraction * learning_rate`, after global-norm clipping.

    The learning rate rises linearly from 0 over `warmup_steps`, then follows
    $\eta_{end} + (\eta - \eta_{end})(1 + \cos(\pi s / S))/2$ over the remaining $S$ steps (Loshchilov & Hutter,
    2017); gradients are first rescaled to global norm at most `clip_norm` (None: no clipping).
    """
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0; got {learning_rate}")
    if total_steps < 1:
        raise ValueError(f"`total_steps` must be >= 1; got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"`warmup_steps` must lie in [0, total_steps={total_steps}]; got {warmup_steps}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"`clip_norm` must be > 0 or None; got {clip_norm}")
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=end_fraction * learning_rate,
    )
    adam = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


def ema_update(ema: PyTree, model: PyTree, decay: float) -> PyTree:
    r"""$\bar\theta \leftarrow d\,\bar\theta + (1 - d)\,\theta$ on the floating-point leaves; the rest from `model`."""
    e, static = eqx.partition(ema, eqx.is_inexact_array)
    p = trainable(model)
    new = jax.tree.map(lambda a, b: a + (1.0 - decay) * (b - a), e, p)
    return eqx.combine(new, static)
