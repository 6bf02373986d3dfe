r"""Stochastic conditioning (Watson et al., 2022, 3DiM "Novel view synthesis with diffusion models")."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float
from .._model import AbstractScoreModel
from .._sde import AbstractSDE
from ._state_key import state_key


class StochasticConditioning(AbstractScoreModel):
    r"""$s(t, x) = s_\theta(t, x, c_i)$ with $i$ drawn uniformly from the `views` at every model evaluation.

    3DiM conditions a single-view model on a set of views by picking one at random per denoising step. Over a run
    this averages the single-view scores in time, which is **not** the score of the joint posterior
    $p(x \mid c_1, \dots, c_n)$ (whose score is $\sum_i s(x \mid c_i) - (n - 1) s(x)$); on a toy where the views
    disagree except on one mode it lands on that mode less often than the joint posterior does (benchmark C2).

    The view index comes from the call's `key` when a sampler passes one, else from `key` folded with the bits of
    $(t, x)$ (`sf.sample` calls models without a key), so that each example and evaluation draws its own view.

    **Arguments:** `model`, a conditional `AbstractScoreModel`; `views`, a pytree whose leaves have a leading axis
    of the number of views (the model's `cond` for view $i$ is `tree_map(lambda v: v[i], views)`); `key`.
    """

    model: AbstractScoreModel
    views: PyTree
    key: PRNGKeyArray
    num_views: int = eqx.field(static=True)

    def __init__(self, model: AbstractScoreModel, views: PyTree, key: PRNGKeyArray):
        if not isinstance(model, AbstractScoreModel):
            raise TypeError(f"StochasticConditioning needs `model` to be an AbstractScoreModel; got {model!r}")
        leaves = jax.tree_util.tree_leaves(views)
        sizes = {jnp.shape(v)[0] if jnp.ndim(v) else None for v in leaves}
        if not leaves or len(sizes) != 1 or None in sizes or 0 in sizes:
            raise ValueError(
                "StochasticConditioning needs `views` with one leading axis (the number of views, >= 1) shared by "
                f"every leaf; got leaf shapes {[jnp.shape(v) for v in leaves]}"
            )
        self.model, self.views, self.key = model, views, key
        (size,) = sizes
        assert size is not None
        self.num_views = int(size)

    @property
    def sde(self) -> AbstractSDE:  # type: ignore[override]
        return self.model.sde

    def view(self, index) -> PyTree:
        return jax.tree.map(lambda v: jnp.asarray(v)[index], self.views)

    def __call__(self, t: ScalarLike, x: Array, cond: Conditioning = None, *, key: PRNGKeyArray | None = None) -> Array:
        if cond is not None:
            raise ValueError("StochasticConditioning holds its conditioning views; the call must not pass `cond`")
        t = as_float(t)
        if key is None:
            k_view, k_model = state_key(self.key, t, x), None
        else:
            k_view, k_model = jax.random.split(key)
        i = jax.random.randint(k_view, (), 0, self.num_views)
        return self.model(t, x, self.view(i), key=k_model)
