"""Label dropout: the training-side half of classifier-free guidance (Ho & Salimans, 2022)."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray


def label_dropout(labels: Int[Array, " *batch"], null: int, rate: float, *, key: PRNGKeyArray) -> Int[Array, " *batch"]:
    r"""Replace each label by the null label `null` independently with probability `rate`.

    Training one network on $c$ with probability $1 - p$ and on $\varnothing$ with probability $p$ teaches it both
    $s(x, t \mid c)$ and $s(x, t)$, the pair `ClassifierFreeGuidance` combines; Ho & Salimans (2022) use
    $p \in [0.1, 0.2]$. Pass the result as `cond` to a training objective (`batch_dsm_loss`, `batch_vdm_vlb`,
    `vdm_loss_and_grads`); `null` is the value the network reads as "no label" (for `UNet`/`MLP`: `num_classes`).

    **Arguments:** `labels` (integer labels, any batch shape), `null`, `rate` in $[0, 1]$, `key`.
    **Returns:** the labels, dtype and shape unchanged.
    """
    if not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):
        raise ValueError(f"`rate` must be a probability in [0, 1]; got rate={rate!r}")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"`labels` must be integer class labels; got dtype {labels.dtype}")
    if rate == 0.0:
        return labels
    drop = jax.random.bernoulli(key, rate, labels.shape)
    return jnp.where(drop, jnp.asarray(null, labels.dtype), labels)
