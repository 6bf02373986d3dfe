"""One jitted training step for any loss `loss_fn(model, batch, key) -> (loss, aux)`."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jaxtyping import Array, PRNGKeyArray, PyTree

from .sharding import replicated
from .state import TrainState, ema_update, trainable


LossFn = Callable[[PyTree, PyTree, PRNGKeyArray], tuple[Array, dict[str, Array]]]


class CustomGradient(eqx.Module):
    """An objective that computes its own gradients: `fn(model, batch, key) -> ((loss, aux), grads)`.

    For estimators whose update is not the gradient of the reported loss, such as VDM's variance-minimising
    gradient for the learned schedule (`vdm_loss_and_grads`). `grads` is a pytree like `eqx.filter_grad` gives.
    """

    fn: Callable[[PyTree, PyTree, PRNGKeyArray], tuple[tuple[Array, dict[str, Array]], PyTree]]

    def __call__(self, model, batch, key):
        return self.fn(model, batch, key)


def make_train_step(
    loss_fn: LossFn | CustomGradient,
    optimiser: optax.GradientTransformation,
    *,
    ema_decay: float = 0.999,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, PyTree], tuple[TrainState, dict[str, Array]]]:
    r"""Build `step(state, batch) -> (state, metrics)`, jitted, for `loss_fn(model, batch, key) -> (loss, aux)`
    (differentiated with `eqx.filter_value_and_grad`) or a `CustomGradient`.

    `batch` is a pytree whose leaves have shape `(accum, micro, ...)`: the gradient of the mean loss is
    accumulated over the `accum` micro-batches by `lax.scan` (one micro-batch in memory at a time), so
    `accum` micro-batches of size `micro` give the same update as one batch of `accum * micro` up to float
    reassociation. Micro-batch `i` of step `n` uses the key `fold_in(fold_in(state.key, n), i)`.

    After the optimiser update the EMA copy (if the state has one) moves by `ema_decay`. Metrics: `loss`,
    every `aux` entry (means over micro-batches) and `grad_norm` (global norm before clipping).
    With a `mesh`, the new state is constrained to be replicated over it (the batch is expected sharded).
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"`ema_decay` must lie in [0, 1); got {ema_decay}")
    if isinstance(loss_fn, CustomGradient):
        grad_fn = loss_fn
    else:
        grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)

    @eqx.filter_jit
    def step(state: TrainState, batch: PyTree) -> tuple[TrainState, dict[str, Array]]:
        leaves = jax.tree.leaves(batch)
        if not leaves or any(x.ndim < 2 for x in leaves):
            raise ValueError("`batch` leaves must have shape (accum, micro, ...); got a leaf with fewer axes")
        accum = leaves[0].shape[0]
        step_key = jax.random.fold_in(state.key, state.step)

        def micro(i, mb):
            (loss, aux), grads = grad_fn(state.model, mb, jax.random.fold_in(step_key, i))
            return trainable(grads), loss, aux

        if accum == 1:  # no scan: keeps the plain step as lean as a hand-written one
            grads, loss, aux = micro(0, jax.tree.map(lambda x: x[0], batch))
        else:
            zeros = jax.tree.map(
                lambda a: jnp.zeros(a.shape, a.dtype),
                jax.eval_shape(micro, 0, jax.tree.map(lambda x: x[0], batch)),
            )

            def body(carry, inp):
                return jax.tree.map(jnp.add, carry, micro(*inp)), None

            total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum), batch))
            grads, loss, aux = jax.tree.map(lambda a: a / accum, total)
        updates, opt_state = optimiser.update(grads, state.opt_state, trainable(state.model))
        model = eqx.apply_updates(state.model, updates)
        ema = None if state.ema is None else ema_update(state.ema, model, ema_decay)
        new = TrainState(model, opt_state, ema, state.step + 1, state.key)
        if mesh is not None:
            new = _constrain(new, mesh)
        metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
        return new, metrics

    return step


def _constrain(tree: PyTree, mesh: Mesh) -> PyTree:
    sh = replicated(mesh)
    arrays, static = eqx.partition(tree, eqx.is_array)
    arrays = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sh), arrays)
    return eqx.combine(arrays, static)
