r"""A network that also takes the guidance strength $w$ through its conditioning (guided distillation)."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import ScalarLike
from .._nn import MLP, FourierEmbedding
from .._nn.embedding import LabelEmbedding, check_unconditional


class GuidanceWeightMLP(eqx.Module):
    r"""`MLP` whose noise embedding also receives a Fourier embedding of $w$:
    $e = \mathrm{MLP}_t(c_{noise}) + \mathrm{label}(c) + P\,\mathrm{SiLU}(W\,\phi(w))$, $\phi$ = `FourierEmbedding`.

    Called as `net(c_noise, x, (label, w))` (`label` None for an unconditional base). Built from a trained
    `mlp` (the teacher's network) with the $w$ path's last layer zero-initialised, so that a fresh
    `GuidanceWeightMLP(teacher_net, key=k)` computes exactly what `teacher_net(c_noise, x, label)` does: the
    student starts at the teacher (Meng et al., 2023, initialise from the conditional teacher).
    """

    mlp: MLP
    w_embedding: FourierEmbedding
    w_in: eqx.nn.Linear
    w_out: eqx.nn.Linear

    def __init__(self, mlp: MLP, embedding_dim: int = 32, scale: float = 1.0, *, key: PRNGKeyArray):
        """**Arguments:** `mlp` (the base `MLP`, e.g. the teacher's), `embedding_dim` (even size of the Fourier
        embedding of $w$), `scale` (std of its frequencies; $w$ is O(1)-O(10)), `key`."""
        if not isinstance(mlp, MLP):
            raise TypeError(f"GuidanceWeightMLP needs `mlp` to be an MLP; got mlp={mlp!r}")
        k_emb, k_in, k_out = jax.random.split(key, 3)
        width = mlp.inp.out_features
        self.mlp = mlp
        self.w_embedding = FourierEmbedding(embedding_dim, scale, key=k_emb)
        self.w_in = eqx.nn.Linear(embedding_dim, width, key=k_in)
        out = eqx.nn.Linear(width, width, key=k_out)
        self.w_out = eqx.tree_at(
            lambda m: (m.weight, m.bias), out, (jnp.zeros_like(out.weight), jnp.zeros((width,), out.weight.dtype))
        )

    def __call__(
        self, c_noise: ScalarLike, x: Float[Array, " d"], cond: tuple, *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " d"]:
        if not (isinstance(cond, tuple) and len(cond) == 2):
            raise ValueError(f"GuidanceWeightMLP needs `cond` = (label, w); got cond={cond!r}")
        label, w = cond
        m = self.mlp
        if x.shape != (m.data_dim,):
            raise ValueError(f"GuidanceWeightMLP: `x` must be one example of shape ({m.data_dim},); got {x.shape}")
        emb = m.time_mlp(m.embedding(c_noise).astype(x.dtype))
        if m.label is None:
            check_unconditional(label)
        else:
            emb = emb + m.label(label)
        phi = self.w_embedding(jnp.asarray(w, x.dtype)).astype(x.dtype)
        emb = emb + self.w_out(jax.nn.silu(self.w_in(phi)))
        h = m.inp(x)
        for block in m.blocks:
            h = block(h, emb)
        return m.out(jax.nn.silu(h))


class _ShiftedLabel(eqx.Module):
    """A label embedding plus a fixed vector (the $w$ path's output), put in place of a network's `label`."""

    label: LabelEmbedding
    shift: Float[Array, " dim"]

    def __call__(self, cond) -> Float[Array, " dim"]:
        return self.label(cond) + self.shift


class GuidanceWeightNet(eqx.Module):
    r"""Any class-conditional network of scoreflow (`UNet`, `MLP` with `num_classes`) made to take the guidance
    strength $w$ too: its label embedding $\mathrm{label}(c)$, which it adds to its noise embedding, becomes
    $\mathrm{label}(c) + P\,\mathrm{SiLU}(W\,\phi(w))$ with $\phi$ = `FourierEmbedding` (Meng et al., 2023).

    Called as `net(c_noise, x, (label, w), key=...)`. $P$ starts at zero, so a fresh
    `GuidanceWeightNet(teacher_net, key=k)` computes exactly `teacher_net(c_noise, x, label)` for every $w$:
    the student starts at the conditional teacher.
    """

    net: Any  # a conditional network with a `label: LabelEmbedding` field (UNet, MLP)
    w_embedding: FourierEmbedding
    w_in: eqx.nn.Linear
    w_out: eqx.nn.Linear

    def __init__(self, net: Any, embedding_dim: int = 32, scale: float = 1.0, *, key: PRNGKeyArray):
        """**Arguments:** `net` (a network with a `label: LabelEmbedding` field added to its noise embedding, e.g.
        a class-conditional `UNet`), `embedding_dim` (even size of the Fourier embedding of $w$), `scale` (std of
        its frequencies; $w$ is O(1)-O(10)), `key`."""
        label = getattr(net, "label", None)
        if not isinstance(label, LabelEmbedding):
            raise TypeError(
                "GuidanceWeightNet needs a class-conditional network (one with a `label` LabelEmbedding, e.g. "
                f"UNet(..., num_classes=10)); got {type(net).__name__} with label={label!r}"
            )
        k_emb, k_in, k_out = jax.random.split(key, 3)
        width = label.table.weight.shape[1]
        self.net = net
        self.w_embedding = FourierEmbedding(embedding_dim, scale, key=k_emb)
        self.w_in = eqx.nn.Linear(embedding_dim, width, key=k_in)
        out = eqx.nn.Linear(width, width, key=k_out)
        self.w_out = eqx.tree_at(
            lambda m: (m.weight, m.bias), out, (jnp.zeros_like(out.weight), jnp.zeros((width,), out.weight.dtype))
        )

    def __call__(self, c_noise: ScalarLike, x: Float[Array, "*data"], cond: tuple, *, key: PRNGKeyArray | None = None):
        if not (isinstance(cond, tuple) and len(cond) == 2):
            raise ValueError(f"GuidanceWeightNet needs `cond` = (label, w); got cond={cond!r}")
        label, w = cond
        phi = self.w_embedding(jnp.asarray(w, x.dtype)).astype(x.dtype)
        shift = self.w_out(jax.nn.silu(self.w_in(phi)))
        label_embedding = self.net.label
        net = eqx.tree_at(lambda n: n.label, self.net, _ShiftedLabel(label_embedding, shift))
        return net(c_noise, x, label, key=key)
