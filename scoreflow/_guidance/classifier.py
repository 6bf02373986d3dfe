r"""Classifier guidance: the score plus $g$ times the gradient of a noise-conditional classifier's log-probability."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float
from .._model import AbstractScoreModel
from .._sde import AbstractSDE
from .weight import AbstractGuidanceWeight


class ClassifierGuidance(AbstractScoreModel):
    r"""$s = s(t, x) + g(\tilde\sigma)\,\nabla_x \log p_t(y \mid x)$ (Dhariwal & Nichol, 2021; Song et al., 2021).

    By Bayes, $\nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y \mid x)$, so with exact
    models $g = 1$ gives the exact class-conditional score, and this equals classifier-free guidance
    $s_u + g\,(s_c - s_u)$ at the same $g$ (`LabelledMixture` makes both exact to test it). The weight has the
    meaning it has in `Guided` ($g = 1$: the conditional model; $g = 0$: the unconditional one), so the same
    `Constant`/`Interval`/`Ramp` apply; the classifier is evaluated at every call.

    **Arguments:**
    - `model`: an `AbstractScoreModel` (unconditional, or conditional on the call's `cond`).
    - `log_classifier`: `log_classifier(t, x)` on one example returns logits or log-probabilities over the
      classes, shape `(num_classes,)`, of the noisy $x_t$ (a noise-conditional classifier); they are normalised
      here by `log_softmax`, so unnormalised logits are fine.
    - `y`: the class label, or None to take it from the call's `cond` (then `model` is called with
      `cond=None`; per-example labels through `sample(..., cond=labels)`).
    - `weight`: an `AbstractGuidanceWeight`.
    """

    model: AbstractScoreModel
    log_classifier: Callable[..., Array]
    y: Int[Array, ""] | int | None
    weight: AbstractGuidanceWeight

    def __check_init__(self):
        if not isinstance(self.model, AbstractScoreModel):
            raise TypeError(f"ClassifierGuidance needs `model` to be an AbstractScoreModel; got {self.model!r}")
        if not callable(self.log_classifier):
            raise TypeError(
                f"ClassifierGuidance needs `log_classifier` to be callable as (t, x); got {self.log_classifier!r}"
            )
        if not isinstance(self.weight, AbstractGuidanceWeight):
            raise TypeError(f"ClassifierGuidance needs `weight` to be an AbstractGuidanceWeight; got {self.weight!r}")

    @property
    def sde(self) -> AbstractSDE:  # type: ignore[override]
        return self.model.sde

    def log_posterior_grad(
        self, t: ScalarLike, x: Float[Array, "*data"], y: Int[Array, ""] | int
    ) -> Float[Array, "*data"]:
        r"""$\nabla_x \log p_t(y \mid x)$ of the classifier (logits normalised by `log_softmax`)."""

        def log_p(xx):
            logits = self.log_classifier(t, xx)
            if jnp.ndim(logits) != 1:
                raise ValueError(
                    f"`log_classifier(t, x)` must return one vector of class logits, shape (num_classes,); got "
                    f"shape {jnp.shape(logits)}"
                )
            return jax.nn.log_softmax(logits)[y]

        return jax.grad(log_p)(x)

    def __call__(
        self, t: ScalarLike, x: Float[Array, "*data"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*data"]:
        t = as_float(t)
        if self.y is None:
            if cond is None:
                raise ValueError(
                    "ClassifierGuidance has `y=None`, so it takes the label from the call's `cond`; got none"
                )
            y, model_cond = cond, None
        else:
            y, model_cond = self.y, cond
        g = self.weight.at_time(self.sde, t)
        s = self.model(t, x, model_cond, key=key)
        grad = self.log_posterior_grad(t, x, y)
        return s + g.astype(jnp.result_type(s)) * grad.astype(jnp.result_type(s))
