r"""Bits-back coding with a D3PM model (Austin et al., 2021), exact and categorical, for every transition family.

BB-ANS order: pop $x_T \sim q(x_T \mid x_0)$ and $x_{t-1} \sim q(x_{t-1} \mid x_t, x_0)$ for $t = T..2$, then push
$x_0$ under $p_\theta(x_0 \mid x_1)$, each $x_{t-1}$ under $p_\theta(x_{t-1} \mid x_t)$ and $x_T$ under the prior:
the expected rate is the bound $L_{vb}$ of `d3pm_bound_bpd`. Interleaved order: pop $x_t \sim q(x_t \mid x_{t-1})$
(the forward step $[Q_t]_{x_{t-1}, :}$) and push $x_{t-1}$ under $p_\theta(x_{t-1} \mid x_t)$ in turn.
Every pop and its push use an alphabet of the same size $S$, so the coder's floor probabilities cancel.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._discrete.process import AbstractReverseParameterisation, PosteriorMixture, q_posterior_probs, q_probs
from .._discrete.transitions import AbsorbingTransition, AbstractTransition
from .base import BBANS, AbstractBitsBackCodec, AbstractOrder, Interleaved, fingerprint, order_name, to_float64
from .coder import AnsStack


_FLOOR = 2.0**-24  # the coder's smallest probability: symbols below it are coded at it, by pop and push alike


class D3PMCodec(AbstractBitsBackCodec):
    r"""Lossless codec for integer data on `transition`'s data states with a D3PM $x_0$-prediction model.

    **Arguments:** `model` (callable `model(s, x_t, cond, *, key)` on one example returning $x_0$ logits, as for
    `d3pm_bound_bpd`; evaluated in float64), `transition`, `data_shape`, `num_levels` (data values in
    `[0, num_levels)`, the transition's data states), `order`, `parameterisation` (default `PosteriorMixture()`, as
    in training), `batch_size`.
    """

    def __init__(
        self,
        model,
        transition: AbstractTransition,
        *,
        data_shape: tuple[int, ...],
        num_levels: int,
        order: AbstractOrder = Interleaved(),
        parameterisation: AbstractReverseParameterisation = PosteriorMixture(),
        batch_size: int = 128,
    ):
        if not isinstance(transition, AbstractTransition):
            raise TypeError(f"`transition` must be an AbstractTransition; got {type(transition).__name__}")
        order_name(order)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}")
        mask = np.asarray(transition.data_mask())
        if not (isinstance(num_levels, int) and 2 <= num_levels <= transition.num_states and mask[:num_levels].all()):
            raise ValueError(
                f"`num_levels` must be an int in [2, {transition.num_states}] whose states are all data "
                f"states of the transition; got {num_levels!r}"
            )
        self.model = to_float64(model)
        self.transition = to_float64(transition)
        self.parameterisation = parameterisation
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_levels, self.order, self.batch_size = num_levels, order, batch_size
        self.num_steps, self.num_states = transition.num_steps, transition.num_states
        self._prior = np.asarray(self.transition.prior_probs(), np.float64)

    def header(self) -> dict:
        return {
            "codec": "d3pm",
            "order": order_name(self.order),
            "num_steps": self.num_steps,
            "num_states": self.num_states,
            "num_levels": self.num_levels,
            "transition": type(self.transition).__name__,
            "parameterisation": type(self.parameterisation).__name__,
            "batch_size": self.batch_size,
            "data_shape": list(self.data_shape),
            "model_sha256": fingerprint((self.model, self.transition)),
        }

    def initial_words_per_image(self) -> int:
        d = math.prod(self.data_shape)
        per = math.log2(self.num_states) + 1.0
        steps = self.num_steps + 1 if isinstance(self.order, BBANS) else 3
        return int(math.ceil(d * steps * per / 32.0)) + 4

    # ----------------------------------------------------------------------------------------------------------
    def _flat(self, probs) -> np.ndarray:
        p = np.asarray(probs, np.float64).reshape(-1, self.num_states)
        if not np.all(np.isfinite(p)):
            raise ValueError("the D3PM model gave non-finite probabilities (NaN or infinite parameters?)")
        return p

    def _shaped(self, v: np.ndarray, batch: int) -> jnp.ndarray:
        return jnp.asarray(v.reshape((batch, *self.data_shape)))

    def _model(self, t: int, x_t: np.ndarray, batch: int) -> np.ndarray:
        out = _P(self.model, self.transition, self.parameterisation, jnp.asarray(t), self._shaped(x_t, batch))
        return self._flat(out)

    def _post(self, t: int, x_t, x0, batch: int) -> np.ndarray:
        return self._flat(_Q_POST(self.transition, jnp.asarray(t), self._shaped(x_t, batch), self._shaped(x0, batch)))

    def _fwd(self, t: int, x_prev, batch: int) -> np.ndarray:
        return self._flat(_Q_FWD(self.transition, jnp.asarray(t), self._shaped(x_prev, batch)))

    def _marg(self, t: int, x0, batch: int) -> np.ndarray:
        return self._flat(_Q_MARG(self.transition, jnp.asarray(t), self._shaped(x0, batch)))

    def _prior_rows(self, n: int) -> np.ndarray:
        return np.broadcast_to(self._prior, (n, self.num_states))

    # ----------------------------------------------------------------------------------------------------------
    def _absorbing(self) -> bool:
        tr = self.transition
        return (
            isinstance(tr, AbsorbingTransition)
            and isinstance(self.order, BBANS)
            and tr.mask_index == tr.num_states - 1
            and float(tr.alpha_bars[tr.num_steps]) == 0.0
        )

    def _stay(self, t: int) -> float:
        r"""$q(x_{t-1} = m \mid x_t = m, x_0)$ for any $x_0$ (and the model's, which equals it): the unmask decision."""
        a = float(self.transition.alpha_bars[t - 1])
        b = float(self.transition.betas[t - 1])
        return (1.0 - a) / ((1.0 - a) + a * b)

    def _decision_probs(self, t: int, n: int) -> np.ndarray:
        stay = self._stay(t)
        return np.broadcast_to(np.array([1.0 - stay, stay]), (n, 2))

    def _values(self, t: int, x_t: np.ndarray, batch: int, sel: np.ndarray) -> np.ndarray:
        return self._model(t, x_t, batch)[sel, : self.num_states - 1]

    def _encode_absorbing(self, stack: AnsStack, x0: np.ndarray, B: int, track) -> None:
        """BB-ANS for absorbing transitions: $x_T$ is all [MASK]; a masked $x_t$ has $x_{t-1} = x_0$ or [MASK], and
        that decision has the same probability under $q$ and $p_\theta$, so only the unmasked value costs bits
        (under $p_\theta$'s distribution over the data states); an unmasked $x_t$ is copied, uncoded."""
        T, m = self.num_steps, self.num_states - 1
        xs = [None] * (T + 1)
        xs[T] = np.full_like(x0, m)
        for t in range(T, 1, -1):
            x = xs[t].copy()
            sel = x == m
            if 0.0 < self._stay(t) < 1.0:
                d = self._pop(stack, self._decision_probs(t, int(sel.sum())))
                x[np.flatnonzero(sel)[d == 0]] = x0[sel][d == 0]
            elif self._stay(t) == 0.0:
                x[sel] = x0[sel]
            xs[t - 1] = x
        track()
        for t in range(1, T + 1):
            x_t, x_prev = xs[t], (xs[t - 1] if t > 1 else x0)
            sel = x_t == m
            unmask = sel & (x_prev != m)
            if unmask.any():
                self._push(stack, x_prev[unmask], self._values(t, x_t, B, unmask))
            if t > 1 and 0.0 < self._stay(t) < 1.0:
                self._push(stack, (x_prev[sel] == m).astype(np.int64), self._decision_probs(t, int(sel.sum())))

    def _decode_absorbing(self, stack: AnsStack, n: int) -> np.ndarray:
        T, m = self.num_steps, self.num_states - 1
        size = n * math.prod(self.data_shape)
        xs = [None] * (T + 1)
        xs[T] = np.full(size, m, np.int64)
        decisions = {}
        for t in range(T, 0, -1):
            x_t = xs[t]
            sel = x_t == m
            x = x_t.copy()
            if t > 1 and 0.0 < self._stay(t) < 1.0:
                d = stack.pop_categorical(self._decision_probs(t, int(sel.sum())))
                decisions[t] = d
                unmask = np.zeros_like(sel)
                unmask[np.flatnonzero(sel)[d == 0]] = True
            elif t > 1 and self._stay(t) == 1.0:
                unmask = np.zeros_like(sel)
            else:
                unmask = sel
            if unmask.any():
                x[unmask] = stack.pop_categorical(self._values(t, x_t, n, unmask))
            xs[t - 1] = x
        x0 = xs[0]
        self._check_levels(x0)
        for t in range(2, T + 1):
            if t in decisions:
                stack.push_categorical(decisions[t], self._decision_probs(t, decisions[t].size))
        return x0.reshape((n, *self.data_shape))

    def _encode_chunk(self, stack: AnsStack, levels: np.ndarray, track) -> None:
        T, B = self.num_steps, levels.shape[0]
        x0 = levels.reshape(-1)
        if self._absorbing():
            self._encode_absorbing(stack, x0, B, track)
            return
        if isinstance(self.order, Interleaved):
            x = self._pop(stack, self._marg(1, x0, B))
            track()
            self._push(stack, x0, self._model(1, x, B))
            for t in range(2, T + 1):
                x_t = self._pop(stack, self._fwd(t, x, B))
                track()
                self._push(stack, x, self._model(t, x_t, B))
                x = x_t
            self._push(stack, x, self._prior_rows(x.size))
            return
        xs = [None] * (T + 1)
        xs[T] = self._pop(stack, self._marg(T, x0, B))
        for t in range(T, 1, -1):
            xs[t - 1] = self._pop(stack, self._post(t, xs[t], x0, B))
        track()
        self._push(stack, x0, self._model(1, xs[1], B))
        for t in range(2, T + 1):
            self._push(stack, xs[t - 1], self._model(t, xs[t], B))
        self._push(stack, xs[T], self._prior_rows(x0.size))

    def _decode_chunk(self, stack: AnsStack, n: int) -> np.ndarray:
        if self._absorbing():
            return self._decode_absorbing(stack, n)
        T = self.num_steps
        size = n * math.prod(self.data_shape)
        if isinstance(self.order, Interleaved):
            x = stack.pop_categorical(self._prior_rows(size))
            for t in range(T, 1, -1):
                x_prev = stack.pop_categorical(self._model(t, x, n))
                stack.push_categorical(x, self._fwd(t, x_prev, n))
                x = x_prev
            x0 = stack.pop_categorical(self._model(1, x, n))
            self._check_levels(x0)
            stack.push_categorical(x, self._marg(1, x0, n))
            return x0.reshape((n, *self.data_shape))
        xs = [None] * (T + 1)
        xs[T] = stack.pop_categorical(self._prior_rows(size))
        for t in range(T, 1, -1):
            xs[t - 1] = stack.pop_categorical(self._model(t, xs[t], n))
        x0 = stack.pop_categorical(self._model(1, xs[1], n))
        self._check_levels(x0)
        for t in range(2, T + 1):
            stack.push_categorical(xs[t - 1], self._post(t, xs[t], x0, n))
        stack.push_categorical(xs[T], self._marg(T, x0, n))
        return x0.reshape((n, *self.data_shape))

    def _pop(self, stack: AnsStack, probs: np.ndarray) -> np.ndarray:
        s = stack.pop_categorical(probs)
        self._ledger(np.log2(np.maximum(probs[np.arange(s.size), s] / probs.sum(axis=1), _FLOOR)), pushed=False)
        return s

    def _push(self, stack: AnsStack, s: np.ndarray, probs: np.ndarray) -> None:
        self._ledger(np.log2(np.maximum(probs[np.arange(s.size), s] / probs.sum(axis=1), _FLOOR)), pushed=True)
        stack.push_categorical(s, probs)

    def _check_levels(self, x0: np.ndarray) -> None:
        from .base import StreamMismatchError

        if x0.size and x0.max() >= self.num_levels:
            raise StreamMismatchError(
                "decoded a state outside the data's levels: the stream was not written by "
                "this model and codec settings, or it is corrupted"
            )


def _p_probs(model, transition, parameterisation, t, x_t):
    def one(x):
        s = t.astype(jnp.float64) / transition.num_steps
        logits = model(s, x, None, key=None)
        return jnp.exp(parameterisation(transition, t, x, logits))

    return jax.vmap(one)(x_t)


def _q_post(transition, t, x_t, x0):
    return q_posterior_probs(transition, t, x_t, x0)


def _q_fwd(transition, t, x_prev):
    return transition.one_step_matrix(t)[x_prev]


def _q_marginal(transition, t, x0):
    return q_probs(transition, t, x0)


_P = eqx.filter_jit(_p_probs)
_Q_POST = eqx.filter_jit(_q_post)
_Q_FWD = eqx.filter_jit(_q_fwd)
_Q_MARG = eqx.filter_jit(_q_marginal)
