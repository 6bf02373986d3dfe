r"""D3PM transition matrices $Q_t$ (row-stochastic, $[Q_t]_{ij} = q(x_t = j \mid x_{t-1} = i)$) and their cumulative
products $\bar Q_t = Q_1 \cdots Q_t$, so that $q(x_t \mid x_0) = \mathrm{Cat}(x_0^\top \bar Q_t)$
(Austin et al., 2021, "Structured Denoising Diffusion Models in Discrete State-Spaces").

Matrices are formed on the host in float64 and checked in `__check_init__`. Uniform and absorbing transitions are
applied in closed form ($O(S)$ per variable); the discretised Gaussian and the embedding transition store dense
$S \times S$ matrices.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .schedules import AbstractBetaSchedule, CosineBetaSchedule, LinearBetaSchedule, MutualInformationSchedule


def _one_hot(x: Int[Array, "*batch"], num_states: int, dtype) -> Float[Array, "*batch S"]:
    return jax.nn.one_hot(x, num_states, dtype=dtype)


def _tolerance(a: ArrayLike) -> float:
    return 1e-10 if np.asarray(a).dtype == np.float64 else 1e-5


def _check_stochastic(name: str, mats: ArrayLike) -> None:
    """Rows non-negative and summing to 1 (the matrices must be concrete, i.e. built outside `jit`)."""
    m = np.asarray(mats, dtype=np.float64)
    tol = _tolerance(mats)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: transition matrices contain NaN or inf")
    if m.min() < -tol:
        raise ValueError(f"{name}: transition matrices must be non-negative; smallest entry is {m.min():.3g}")
    err = np.abs(m.sum(-1) - 1.0).max()
    if err > tol * m.shape[-1]:
        raise ValueError(f"{name}: every row of Q_t and of cumulative Q_t must sum to 1; worst row is off by {err:.3g}")


def _check_probabilities(name: str, field: str, p: ArrayLike) -> None:
    a = np.asarray(p, dtype=np.float64)
    if not (np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0):
        raise ValueError(f"{name}: `{field}` must lie in [0, 1] (rows of Q_t then sum to 1); got range "
                         f"[{a.min():.3g}, {a.max():.3g}]")


def _check_int(name: str, field: str, value: object, minimum: int) -> None:
    if not (isinstance(value, int) and value >= minimum):
        raise ValueError(f"{name} needs `{field}` to be an int >= {minimum}; got {field}={value!r}")


class AbstractTransition(eqx.Module):
    r"""A family of one-step transition matrices $Q_1, \dots, Q_T$ over `num_states` states $S$.

    Time steps are integers: $t \in \{1, \dots, T\}$ for $Q_t$ and $t \in \{0, \dots, T\}$ for $\bar Q_t$
    ($\bar Q_0 = I$). States are integers in $[0, S)$; `data_mask()` says which of them data $x_0$ may take
    (all but [MASK] for the absorbing transition).
    """

    num_states: eqx.AbstractVar[int]
    num_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def qbar_probs(self, t: Int[ArrayLike, ""], p0: Float[Array, "*batch S"]) -> Float[Array, "*batch S"]:
        r"""$p_0^\top \bar Q_t$: the law of $x_t$ when $x_0 \sim p_0$ (a one-hot $p_0$ gives $q(x_t \mid x_0)$)."""

    @abc.abstractmethod
    def qbar_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        r"""$[\bar Q_t]_{:, x_t}$, i.e. $q(x_t \mid x_0)$ as a function of $x_0$."""

    @abc.abstractmethod
    def q_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        r"""$[Q_t]_{:, x_t}$, i.e. $q(x_t \mid x_{t-1})$ as a function of $x_{t-1}$ ($1 \le t \le T$)."""

    @abc.abstractmethod
    def prior_probs(self) -> Float[Array, " S"]:
        r"""The prior $p(x_T)$: the stationary law that $q(x_T \mid x_0)$ approaches."""

    @abc.abstractmethod
    def data_mask(self) -> Bool[Array, " S"]:
        """True for the states that data $x_0$ can take."""

    @abc.abstractmethod
    def one_step_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        r"""Dense $Q_t$ ($1 \le t \le T$), for tests and small state spaces."""

    @abc.abstractmethod
    def cumulative_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        r"""Dense $\bar Q_t$ ($0 \le t \le T$), for tests and small state spaces."""


def _cumprod_alphas(betas: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ones(1), np.cumprod(1.0 - betas)])


class UniformTransition(AbstractTransition):
    r"""$Q_t = (1 - \beta_t) I + \frac{\beta_t}{S} \mathbf{1}\mathbf{1}^\top$, so
    $\bar Q_t = \bar\alpha_t I + \frac{1 - \bar\alpha_t}{S} \mathbf{1}\mathbf{1}^\top$ with
    $\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)$ (Hoogeboom et al., 2021; Austin et al., 2021, Sec. 3.1).
    Stationary law: uniform. Applied in closed form."""

    num_states: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    betas: Float[Array, " T"]
    alpha_bars: Float[Array, " T+1"]

    def __init__(self, num_states: int, num_steps: int, schedule: AbstractBetaSchedule = CosineBetaSchedule()):
        """**Arguments:** `num_states` $S \\ge 2$, `num_steps` $T$, `schedule` (probabilities in [0, 1])."""
        _check_int("UniformTransition", "num_states", num_states, 2)
        _check_int("UniformTransition", "num_steps", num_steps, 1)
        self.num_states, self.num_steps = num_states, num_steps
        b = schedule.betas(num_steps)
        _check_probabilities("UniformTransition", "schedule.betas", b)
        self.betas, self.alpha_bars = jnp.asarray(b), jnp.asarray(_cumprod_alphas(b))

    def __check_init__(self):
        _check_probabilities("UniformTransition", "betas", self.betas)
        _check_probabilities("UniformTransition", "alpha_bars", self.alpha_bars)

    def qbar_probs(self, t: Int[ArrayLike, ""], p0: Float[Array, "*batch S"]) -> Float[Array, "*batch S"]:
        a = self.alpha_bars[t].astype(p0.dtype)
        return a * p0 + (1 - a) * jnp.sum(p0, axis=-1, keepdims=True) / self.num_states

    def qbar_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        a = self.alpha_bars[t]
        return a * _one_hot(x_t, self.num_states, a.dtype) + (1 - a) / self.num_states

    def q_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        b = self.betas[jnp.asarray(t) - 1]
        return (1 - b) * _one_hot(x_t, self.num_states, b.dtype) + b / self.num_states

    def prior_probs(self) -> Float[Array, " S"]:
        return jnp.full((self.num_states,), 1.0 / self.num_states, self.betas.dtype)

    def data_mask(self) -> Bool[Array, " S"]:
        return jnp.ones((self.num_states,), bool)

    def one_step_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        return self.q_column(t, jnp.arange(self.num_states)).T

    def cumulative_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        return self.qbar_column(t, jnp.arange(self.num_states)).T


class AbsorbingTransition(AbstractTransition):
    r"""$Q_t = (1 - \beta_t) I + \beta_t \mathbf{1} e_m^\top$: each variable jumps to the [MASK] state $m$ with
    probability $\beta_t$ and stays there; $\bar Q_t = \bar\alpha_t I + (1 - \bar\alpha_t) \mathbf{1} e_m^\top$
    (Austin et al., 2021, Sec. 3.1 and App. A.2.4). Stationary law: $e_m$. Applied in closed form.

    With `mask_index=None` the mask is an extra state $m = K$ ($S = K + 1$ states for `num_classes` $K$); an
    explicit `mask_index` $< K$ uses one of the $K$ states as [MASK] (then $S = K$ and data must never take it).
    """

    num_states: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    mask_index: int = eqx.field(static=True)
    betas: Float[Array, " T"]
    alpha_bars: Float[Array, " T+1"]

    def __init__(
        self,
        num_classes: int,
        num_steps: int,
        schedule: AbstractBetaSchedule = MutualInformationSchedule(),
        mask_index: int | None = None,
    ):
        """**Arguments:** `num_classes` $K \\ge 1$, `num_steps` $T$, `schedule` (probabilities in [0, 1]; default
        $\\beta_t = 1/(T - t + 1)$), `mask_index` (None: a new state $K$; else an int in $[0, K]$)."""
        _check_int("AbsorbingTransition", "num_classes", num_classes, 1)
        _check_int("AbsorbingTransition", "num_steps", num_steps, 1)
        if mask_index is None:
            mask_index = num_classes
        if not (isinstance(mask_index, int) and 0 <= mask_index <= num_classes):
            raise ValueError(f"AbsorbingTransition needs `mask_index` None or an int in [0, {num_classes}]; "
                             f"got mask_index={mask_index!r}")
        self.num_states = num_classes + 1 if mask_index == num_classes else num_classes
        if self.num_states < 2:
            raise ValueError("AbsorbingTransition needs at least one data state besides [MASK]; got num_classes=1 "
                             "with mask_index=0")
        self.num_steps, self.mask_index = num_steps, mask_index
        b = schedule.betas(num_steps)
        _check_probabilities("AbsorbingTransition", "schedule.betas", b)
        self.betas, self.alpha_bars = jnp.asarray(b), jnp.asarray(_cumprod_alphas(b))

    def __check_init__(self):
        _check_probabilities("AbsorbingTransition", "betas", self.betas)
        _check_probabilities("AbsorbingTransition", "alpha_bars", self.alpha_bars)

    def _mask(self, dtype) -> Float[Array, " S"]:
        return _one_hot(jnp.asarray(self.mask_index), self.num_states, dtype)

    def qbar_probs(self, t: Int[ArrayLike, ""], p0: Float[Array, "*batch S"]) -> Float[Array, "*batch S"]:
        a = self.alpha_bars[t].astype(p0.dtype)
        return a * p0 + (1 - a) * jnp.sum(p0, axis=-1, keepdims=True) * jnp.broadcast_to(self._mask(p0.dtype), p0.shape)

    def _column(self, keep: Float[Array, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        is_mask = (x_t == self.mask_index)[..., None].astype(keep.dtype)
        return keep * _one_hot(x_t, self.num_states, keep.dtype) + (1 - keep) * is_mask

    def qbar_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        return self._column(self.alpha_bars[t], x_t)

    def q_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        return self._column(1 - self.betas[jnp.asarray(t) - 1], x_t)

    def prior_probs(self) -> Float[Array, " S"]:
        return self._mask(self.betas.dtype)

    def data_mask(self) -> Bool[Array, " S"]:
        return jnp.arange(self.num_states) != self.mask_index

    def one_step_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        return self.q_column(t, jnp.arange(self.num_states)).T

    def cumulative_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        return self.qbar_column(t, jnp.arange(self.num_states)).T


def _cumulative_products(q: np.ndarray) -> np.ndarray:
    out = [np.eye(q.shape[-1])]
    for qt in q:
        out.append(out[-1] @ qt)
    return np.stack(out)


class _DenseDoublyStochastic(AbstractTransition):
    """Dense doubly-stochastic transitions (discretised Gaussian, embedding neighbours): one-step and cumulative
    $S \times S$ matrices stored in full, uniform stationary law, every state a data state. Subclasses build
    `q_onestep` and `q_bar` in `__init__`; rows are checked to sum to one."""

    num_states: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    q_onestep: Float[Array, "T S S"]
    q_bar: Float[Array, "T+1 S S"]

    def __check_init__(self):
        _check_stochastic(type(self).__name__, self.q_onestep)
        _check_stochastic(type(self).__name__, self.q_bar)

    def qbar_probs(self, t: Int[ArrayLike, ""], p0: Float[Array, "*batch S"]) -> Float[Array, "*batch S"]:
        return p0 @ self.q_bar[t].astype(p0.dtype)

    def qbar_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        return self.q_bar[t].T[x_t]

    def q_column(self, t: Int[ArrayLike, ""], x_t: Int[Array, "*batch"]) -> Float[Array, "*batch S"]:
        return self.q_onestep[jnp.asarray(t) - 1].T[x_t]

    def prior_probs(self) -> Float[Array, " S"]:
        return jnp.full((self.num_states,), 1.0 / self.num_states, self.q_bar.dtype)

    def data_mask(self) -> Bool[Array, " S"]:
        return jnp.ones((self.num_states,), bool)

    def one_step_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        return self.q_onestep[jnp.asarray(t) - 1]

    def cumulative_matrix(self, t: Int[ArrayLike, ""]) -> Float[Array, "S S"]:
        return self.q_bar[t]


class GaussianTransition(_DenseDoublyStochastic):
    r"""Discretised-Gaussian transition for ordinal data (pixel intensities): for $i \ne j$
    $[Q_t]_{ij} = \exp\!\big(-\frac{4 (i - j)^2}{(S - 1)^2 \beta_t}\big) / \sum_{n = -(S-1)}^{S-1}
    \exp\!\big(-\frac{4 n^2}{(S - 1)^2 \beta_t}\big)$ and $[Q_t]_{ii} = 1 - \sum_{j \ne i} [Q_t]_{ij}$
    (Austin et al., 2021, App. A.2.2). Symmetric and doubly stochastic, so the stationary law is uniform; nearby
    levels are likelier targets than far ones. Dense $S \times S$ storage; $\bar Q_t$ by float64 products."""


    def __init__(self, num_states: int, num_steps: int, schedule: AbstractBetaSchedule = LinearBetaSchedule()):
        """**Arguments:** `num_states` $S \\ge 2$ (ordered levels), `num_steps` $T$, `schedule` ($\\beta_t > 0$)."""
        _check_int("GaussianTransition", "num_states", num_states, 2)
        _check_int("GaussianTransition", "num_steps", num_steps, 1)
        b = schedule.betas(num_steps)
        if not (np.all(np.isfinite(b)) and b.min() > 0):
            raise ValueError(f"GaussianTransition needs betas > 0; got smallest {b.min():.3g}")
        self.num_states, self.num_steps = num_states, num_steps
        n = np.arange(-(num_states - 1), num_states, dtype=np.float64)
        logits = -4.0 * n[None, :] ** 2 / ((num_states - 1) ** 2 * b[:, None])  # (T, 2S - 1)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w = w / w.sum(-1, keepdims=True)
        i = np.arange(num_states)
        q = w[:, (i[None, :] - i[:, None]) + num_states - 1]  # (T, S, S), entry (i, j) uses n = j - i
        q[:, i, i] = 0.0
        q[:, i, i] = 1.0 - q.sum(-1)
        self.q_onestep, self.q_bar = jnp.asarray(q), jnp.asarray(_cumulative_products(q))


class EmbeddingNeighbourTransition(_DenseDoublyStochastic):
    r"""Nearest-neighbour transition in an embedding space: with $A_{ij} = 1$ when $j$ is among the $k$ nearest
    (Euclidean) neighbours of $i$, the symmetric rate matrix $R = A' - \mathrm{diag}(A' \mathbf{1})$,
    $A' = (A + A^\top)/(2k)$, generates $Q_t = \exp(\beta_t R)$ (Austin et al., 2021, App. A.2.3). All $Q_t$
    commute, so $\bar Q_t = \exp\big((\sum_{s \le t} \beta_s) R\big)$, computed exactly from the eigendecomposition
    of $R$ in float64. Doubly stochastic; stationary law uniform (if the kNN graph is connected)."""


    def __init__(
        self,
        embeddings: Float[ArrayLike, "S dim"],
        num_steps: int,
        num_neighbours: int = 2,
        schedule: AbstractBetaSchedule = LinearBetaSchedule(0.02, 1.0),
    ):
        """**Arguments:** `embeddings` (one row per state), `num_steps` $T$, `num_neighbours` $k$,
        `schedule` ($\\beta_t \\ge 0$, CTMC time per step)."""
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or e.shape[0] < 2:
            raise ValueError(f"EmbeddingNeighbourTransition needs `embeddings` of shape (S >= 2, dim); got {e.shape}")
        num_states = e.shape[0]
        _check_int("EmbeddingNeighbourTransition", "num_steps", num_steps, 1)
        if not (isinstance(num_neighbours, int) and 1 <= num_neighbours < num_states):
            raise ValueError(f"EmbeddingNeighbourTransition needs `num_neighbours` an int in [1, {num_states - 1}]; "
                             f"got num_neighbours={num_neighbours!r}")
        b = schedule.betas(num_steps)
        if not (np.all(np.isfinite(b)) and b.min() >= 0):
            raise ValueError(f"EmbeddingNeighbourTransition needs betas >= 0; got smallest {b.min():.3g}")
        self.num_states, self.num_steps = num_states, num_steps
        d2 = ((e[:, None, :] - e[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        nn = np.argsort(d2, axis=1, kind="stable")[:, :num_neighbours]
        a = np.zeros((num_states, num_states))
        a[np.arange(num_states)[:, None], nn] = 1.0
        a = (a + a.T) / (2.0 * num_neighbours)
        rate = a - np.diag(a.sum(1))
        lam, vec = np.linalg.eigh(rate)

        def expm(s: np.ndarray) -> np.ndarray:
            m = np.einsum("ik,...k,jk->...ij", vec, np.exp(s[..., None] * lam), vec)
            return np.clip(m, 0.0, None)  # remove -1e-17 round-off; rows still sum to 1 to ~1e-15

        self.q_onestep = jnp.asarray(expm(b))
        self.q_bar = jnp.asarray(expm(np.concatenate([np.zeros(1), np.cumsum(b)])))
