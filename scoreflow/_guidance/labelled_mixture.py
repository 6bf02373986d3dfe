r"""A class-labelled Gaussian mixture: exact class-conditional scores and the exact class posterior $p_t(y \mid x)$.

Each component $k$ of $p_0 = \sum_k w_k N(\mu_k, \Sigma_k)$ carries a class label $c_k$. Then
$p_t(x \mid y) \propto \sum_{k: c_k = y} w_k N(x; \alpha\mu_k, \alpha^2\Sigma_k + \sigma^2 I)$ is again a mixture,
and $p_t(y \mid x) = \sum_{k: c_k = y} r_k(x)$ with $r_k$ the component responsibilities of $p_t$. This is the
reference that makes classifier guidance, classifier-free guidance and their equivalence testable exactly.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._custom_types import Conditioning, ScalarLike
from .._misc import as_float
from .._model import AbstractScoreModel
from .._reference import AnalyticScore, GaussianMixture, marginal
from .._sde import AbstractSDE


class LabelledMixture(eqx.Module):
    r"""A `GaussianMixture` whose components carry class labels `labels[k]` in `0 .. num_classes - 1`.

    **Arguments:** `mixture` (k components); `labels`, integers of shape (k,); `num_classes` (default
    `max(labels) + 1`). Every class must own at least one component of positive weight.
    """

    mixture: GaussianMixture
    labels: Int[Array, " k"]
    num_classes: int = eqx.field(static=True)

    def __init__(self, mixture: GaussianMixture, labels: ArrayLike, num_classes: int | None = None):
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"LabelledMixture needs `mixture` to be a GaussianMixture; got {type(mixture).__name__}")
        lab = np.asarray(labels)
        if not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"`labels` must be integers; got dtype {lab.dtype}")
        if lab.shape != (mixture.num_components,):
            raise ValueError(
                f"`labels` must have shape (k,) = ({mixture.num_components},), one per component; got {lab.shape}"
            )
        if num_classes is None:
            num_classes = int(lab.max()) + 1
        if lab.min() < 0 or lab.max() >= num_classes:
            raise ValueError(f"`labels` must lie in [0, num_classes) = [0, {num_classes}); got {lab.tolist()}")
        w = np.asarray(mixture.weights)
        empty = [c for c in range(num_classes) if not w[lab == c].sum() > 0]
        if empty:
            raise ValueError(f"every class needs a component of positive weight; classes {empty} have none")
        self.mixture = mixture
        self.labels = jnp.asarray(lab)
        self.num_classes = int(num_classes)

    def _one_hot(self) -> Float[Array, "k c"]:
        return jax.nn.one_hot(self.labels, self.num_classes, dtype=self.mixture.weights.dtype)

    def class_prior(self) -> Float[Array, " c"]:
        r"""$p(y) = \sum_{k: c_k = y} w_k$."""
        return self.mixture.weights @ self._one_hot()

    def class_mixture(self, y: Int[ArrayLike, ""]) -> GaussianMixture:
        r"""$p_0(x \mid y)$: the components of class `y`, reweighted to sum to one (`y` may be traced)."""
        w = jnp.where(self.labels == y, self.mixture.weights, 0.0)
        return eqx.tree_at(lambda m: m.weights, self.mixture, w / jnp.sum(w))

    def log_posterior(self, sde: AbstractSDE, t: ScalarLike, x: Float[Array, " d"]) -> Float[Array, " c"]:
        r"""$\log p_t(y \mid x)$ for every class $y$, exact: log-sum-exp of the log-responsibilities of each
        class's components under `marginal(mixture, sde, t)`."""
        log_r = jax.nn.log_softmax(marginal(self.mixture, sde, t).component_log_probs(x))
        mask = self._one_hot().T > 0  # (c, k)
        return jax.nn.logsumexp(jnp.where(mask, log_r[None, :], -jnp.inf), axis=1)

    def classifier(self, sde: AbstractSDE) -> eqx.Partial:
        r"""The exact noise-conditional classifier `(t, x) -> log p_t(. | x)` for `ClassifierGuidance`."""
        return eqx.Partial(self.log_posterior, sde)

    def conditional_score(self, sde: AbstractSDE, y: Int[ArrayLike, ""]) -> AnalyticScore:
        r"""The exact score of $p_t(x \mid y)$."""
        return AnalyticScore(mixture=self.class_mixture(y), sde=sde)

    def unconditional_score(self, sde: AbstractSDE) -> AnalyticScore:
        r"""The exact score of $p_t(x)$."""
        return AnalyticScore(mixture=self.mixture, sde=sde)

    def score_model(self, sde: AbstractSDE) -> "LabelledScore":
        """The exact conditional score model: `cond` a label, `LabelledScore.NULL` (-1) or None unconditional."""
        return LabelledScore(labelled=self, sde=sde)


class LabelledScore(AbstractScoreModel):
    r"""The exact score $\nabla_x \log p_t(x \mid y)$ of a `LabelledMixture`, with the label `y` as `cond`; the null
    label -1 (or `cond=None`) gives the unconditional $\nabla_x \log p_t(x)$, as a network trained with label
    dropout would. The reference for `ClassifierFreeGuidance(model, y, -1, weight)`."""

    labelled: LabelledMixture
    sde: AbstractSDE

    NULL = -1

    def __call__(
        self, t: ScalarLike, x: Float[Array, " d"], cond: Conditioning = None, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " d"]:
        mixture = self.labelled.mixture
        if x.shape != (mixture.dim,):
            raise ValueError(f"`x` must be one example of shape ({mixture.dim},); got {x.shape}")
        if cond is None:
            return marginal(mixture, self.sde, as_float(t)).score(x)
        y = jnp.asarray(cond)
        if y.shape != () or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"`cond` must be one integer label (or -1 for none); got {cond!r}")
        keep = (self.labelled.labels == y) | (y == self.NULL)
        w = jnp.where(keep, mixture.weights, 0.0)
        conditional = eqx.tree_at(lambda m: m.weights, mixture, w / jnp.sum(w))
        return marginal(conditional, self.sde, as_float(t)).score(x)
