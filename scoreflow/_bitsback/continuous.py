r"""Bits-back coding with a continuous VP diffusion model (VDM): the $T$-step chain of `discrete_time.py` on a grid.

Latent $z_i$ lives on the fixed integer grid $z = k\,\delta_i$ with $\delta_i$ = (the smallest std it is coded
with) / `bins_per_std`. Each coded distribution is a Gaussian quantised to the bins of that grid inside a window
of $n_i$ bins; a latent's pop and its matching push use windows of the same size, so the coder's probability floor
($2^{-24}$ per bin, a loss that grows with the window) cancels between them. In BB-ANS order both are the same
window, centred at $a_i z_{i+1}$ and wide enough for every $x \in [-1, 1]$ ($\pm(|b_i| + 6\sigma)$). The data are
coded under the discretised Gaussian of `DiscretisedGaussianDecoder` (edge bins to $\pm\infty$).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._loss.decoder import DiscretisedGaussianDecoder, check_num_levels
from .._model import AbstractScoreModel
from .._sde import VPSDE
from .base import (
    BBANS,
    AbstractBitsBackCodec,
    AbstractOrder,
    Interleaved,
    LatentOutOfWindowError,
    StreamMismatchError,
    fingerprint,
    order_name,
    to_float64,
)
from .coder import AnsStack
from .discrete_time import vp_gammas, vp_reverse, vp_steps


_WIDTH = 6.0  # window half-width in stds around a pop's mean
_LADDER = 4  # push windows: h * 4**j bins for class j
_CLASSES = 5
_CLASS_PROBS = np.array([1.0 - 2.0**-16] + [2.0**-16 / (_CLASSES - 1)] * (_CLASSES - 1))


class VDMCodec(AbstractBitsBackCodec):
    r"""Lossless codec for images on `num_levels` levels with a VP score model, at the rate of its $T$-step bound.

    **Arguments:** `model` (an `AbstractScoreModel` with a `VPSDE`; evaluated in float64), `data_shape` (one
    image), `num_levels` ($L$; data $x = 2k/(L-1) - 1$), `num_steps` ($T$), `order` (`Interleaved()` or
    `BBANS()`), `bins_per_std` (grid resolution $R$), `matched_variance`, `batch_size` (images per model call).

    **The grid and the initial bits.** Quantising a Gaussian of std $\sigma$ to bins of width $\delta$ adds
    $\delta^2/12$ to its variance (Sheppard), so the coded KL of every step shrinks by the factor
    $1 - 1/(12R^2)$ ($-0.033\%$ at $R = 16$, $-0.52\%$ at $R = 4$) and a fine grid is needed for a rate at the
    bound. With `matched_variance=True` each Gaussian is coded with std $\sqrt{\sigma^2 - \delta^2/12}$
    instead: the binned distribution then has the continuous one's mean and variance, and the binned KL equals the
    continuous KL to $< 10^{-5}$ relative even at $R = 2$ (the bins' remaining error is in the fourth cumulant).
    That allows a coarse grid, and the initial bits of the interleaved order are about
    $2\log_2 R + \log_2(2\pi e) + \tfrac12\log_2(1/c_0)$ bits/dim (the first two pops, $z_0 \sim q(z_0 \mid x)$
    and $z_1 \sim q(z_1 \mid z_0)$, before anything comes back), so they fall by 2 bits/dim per halving of $R$.
    """

    def __init__(
        self,
        model: AbstractScoreModel,
        *,
        data_shape: tuple[int, ...],
        num_levels: int,
        num_steps: int,
        order: AbstractOrder = Interleaved(),
        bins_per_std: int = 16,
        matched_variance: bool = False,
        batch_size: int = 128,
    ):
        if not isinstance(model, AbstractScoreModel) or not isinstance(model.sde, VPSDE):
            raise TypeError(f"`model` must be an AbstractScoreModel with a VPSDE; got {type(model).__name__}")
        check_num_levels(num_levels)
        order_name(order)
        for name, v, lo in (
            ("num_steps", num_steps, 1),
            ("bins_per_std", bins_per_std, 2),
            ("batch_size", batch_size, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"`{name}` must be an int >= {lo}; got {v!r}")
        self.model = to_float64(model)
        self.data_shape = tuple(int(s) for s in data_shape)
        self.num_levels, self.num_steps, self.order = num_levels, num_steps, order
        if not isinstance(matched_variance, bool):
            raise TypeError(f"`matched_variance` must be a bool; got {matched_variance!r}")
        self.bins_per_std, self.batch_size, self.matched_variance = bins_per_std, batch_size, matched_variance
        self.decoder = DiscretisedGaussianDecoder()
        gammas = np.asarray(_GAMMAS(self.model, num_steps))
        if not np.all(np.isfinite(gammas)):
            raise ValueError("the model's schedule gives non-finite gamma (NaN parameters?)")
        self.steps = st = vp_steps(gammas)
        self._gammas = jnp.asarray(gammas)
        T, R = num_steps, float(bins_per_std)
        if isinstance(order, BBANS):
            q_std = np.concatenate([st.rev_std, [st.sigma[T]]])
        else:
            q_std = np.concatenate([[st.sigma[0]], st.fwd_std])
        p_std = np.concatenate([st.rev_std, [1.0]])
        self.delta = delta = np.minimum(q_std, p_std) / R
        self.half_bins = (np.ceil(_WIDTH * np.maximum(q_std, p_std) / delta) + 1).astype(np.int64)
        if np.any(self.half_bins * _LADDER ** (_CLASSES - 1) >= 2**30):
            raise ValueError("the coding windows are too large for the coder; lower bins_per_std")

    # ----------------------------------------------------------------------------------------------------------
    def header(self) -> dict:
        return {
            "codec": "vdm",
            "order": order_name(self.order),
            "num_steps": self.num_steps,
            "num_levels": self.num_levels,
            "bins_per_std": self.bins_per_std,
            "matched_variance": self.matched_variance,
            "batch_size": self.batch_size,
            "data_shape": list(self.data_shape),
            "model_sha256": fingerprint(self.model),
        }

    def initial_words_per_image(self) -> int:
        st, d = self.steps, math.prod(self.data_shape)
        per_latent = math.log2(self.bins_per_std) + 4.0
        if isinstance(self.order, BBANS):
            bits = (self.num_steps + 1) * per_latent + math.log2(max(1.0, st.sigma[-1] / self.delta[-1]))
        else:
            bits = (
                3 * per_latent
                + 0.5 * math.log2(st.sigma[0] ** 2 / st.rev_std[0] ** 2)
                + math.log2(1.0 / self.delta[-1])
            )
        return int(math.ceil(d * bits / 32.0)) + 4

    # ----------------------------------------------------------------------------------------------------------
    def _z(self, k: np.ndarray, i: int) -> np.ndarray:
        return k.astype(np.float64) * self.delta[i]

    def _coded_std(self, std, i: int) -> np.float64:
        r"""The std (in bins of latent $i$) handed to the coder: $\sigma/\delta_i$, or with `matched_variance`
        $\sqrt{(\sigma/\delta_i)^2 - 1/12}$, so that the binned Gaussian has variance $\sigma^2$."""
        s = np.float64(std) / self.delta[i]
        return np.sqrt(s * s - 1.0 / 12.0) if self.matched_variance else s

    def _pop(self, stack: AnsStack, mean, std, i: int) -> np.ndarray:
        """Pop latent $z_i$ (grid indices) from a Gaussian, in the window of $2h_i + 1$ bins around its mean."""
        mean = np.asarray(mean, np.float64)
        lo = np.rint(mean / self.delta[i]).astype(np.int64) - self.half_bins[i]
        stds = np.broadcast_to(self._coded_std(std, i), mean.shape)
        k = stack.pop_gaussian(mean / self.delta[i] - lo, stds, 2 * int(self.half_bins[i]) + 1) + lo
        self._ledger(self._log2_mass(k, mean, std, i), pushed=False)
        return k

    def _log2_mass(self, k, mean, std, i: int) -> np.ndarray:
        u = (self._z(k, i) - mean) / std
        log_mass = -0.5 * u**2 - 0.5 * math.log(2 * math.pi) + math.log(self.delta[i] / std)
        return np.maximum(log_mass, -24 * math.log(2.0)) / math.log(2.0)  # the coder's floor, as in D3PMCodec

    def _push(self, stack: AnsStack, k, mean, std, i: int, batch: int) -> None:
        r"""Push latent $z_i$ under a Gaussian, in a window around its mean: per image the smallest of the windows
        $h_i \cdot 4^j$ ($j = 0..4$) that holds all its variables; $j$ itself is pushed last (almost always 0, at
        a cost of about $2^{-16}$ bits). With $j = 0$ the window has the size of the pop's, so the coder's floor
        probabilities cancel between the two."""
        mean = np.asarray(mean, np.float64)
        centre = np.rint(mean / self.delta[i]).astype(np.int64)
        dev = np.abs(k - centre).reshape(batch, -1).max(axis=1)
        h = self.half_bins[i] * _LADDER ** np.arange(_CLASSES)
        j = np.searchsorted(h, dev)
        if np.any(j >= _CLASSES):
            raise LatentOutOfWindowError(
                f"latent {i} of {self.num_steps} lies {dev.max()} bins from the model's mean, beyond the widest "
                f"coding window ({h[-1]} bins): the model's step {i + 1} is far from the data (NaN or broken model?)"
            )
        self._ledger(self._log2_mass(k, mean, std, i), pushed=True)
        per_var = np.repeat(j, k.size // batch)
        for c in range(_CLASSES):
            sel = per_var == c
            if np.any(sel):
                lo = centre[sel] - h[c]
                stds = np.broadcast_to(self._coded_std(std, i), lo.shape)
                stack.push_gaussian(k[sel] - lo, mean[sel] / self.delta[i] - lo, stds, 2 * int(h[c]) + 1)
        stack.push_categorical(j, np.broadcast_to(_CLASS_PROBS, (batch, _CLASSES)))

    def _pop_model(self, stack: AnsStack, mean, std, i: int, batch: int) -> np.ndarray:
        """The inverse of `_push`."""
        mean = np.asarray(mean, np.float64)
        centre = np.rint(mean / self.delta[i]).astype(np.int64)
        j = stack.pop_categorical(np.broadcast_to(_CLASS_PROBS, (batch, _CLASSES)))
        per_var = np.repeat(j, centre.size // batch)
        h = self.half_bins[i] * _LADDER ** np.arange(_CLASSES)
        k = np.zeros_like(centre)
        for c in reversed(range(_CLASSES)):
            sel = per_var == c
            if np.any(sel):
                lo = centre[sel] - h[c]
                stds = np.broadcast_to(self._coded_std(std, i), lo.shape)
                k[sel] = stack.pop_gaussian(mean[sel] / self.delta[i] - lo, stds, 2 * int(h[c]) + 1) + lo
        return k

    def _p_mean(self, k: np.ndarray, i: int, batch: int) -> np.ndarray:
        """Mean of $p(z_{i-1} \\mid z_i)$, flattened, from the grid indices of $z_i$."""
        z = self._z(k, i).reshape((batch, *self.data_shape))
        out = _REVERSE_MEAN(self.model, self._gammas, jnp.asarray(i), jnp.asarray(z))
        mean = np.asarray(out, np.float64).reshape(-1)
        if not np.all(np.isfinite(mean)):
            raise ValueError(f"the model's reverse step {i} gave non-finite means (NaN or infinite parameters?)")
        return mean

    def _x_levels_probs(self, k0: np.ndarray, batch: int) -> np.ndarray:
        z0 = self._z(k0, 0).reshape((batch, *self.data_shape))
        st = self.steps
        p = _X_PROBS(self.decoder, jnp.asarray(z0), jnp.asarray(st.alpha[0]), jnp.asarray(st.sigma[0]), self.num_levels)
        return np.asarray(p, np.float64).reshape(-1, self.num_levels)

    def _x(self, levels: np.ndarray) -> np.ndarray:
        return 2.0 * levels.reshape(-1).astype(np.float64) / (self.num_levels - 1) - 1.0

    # ----------------------------------------------------------------------------------------------------------
    def _encode_chunk(self, stack: AnsStack, levels: np.ndarray, track) -> None:
        st, T, B = self.steps, self.num_steps, levels.shape[0]
        x = self._x(levels)
        sym = levels.reshape(-1)
        zeros = np.zeros_like(x)
        if isinstance(self.order, Interleaved):
            k = self._pop(stack, st.alpha[0] * x, st.sigma[0], 0)
            track()
            self._push_x(stack, sym, k, B)
            for i in range(1, T + 1):
                k_i = self._pop(stack, st.fwd_coef[i - 1] * self._z(k, i - 1), st.fwd_std[i - 1], i)
                track()
                self._push(stack, k, self._p_mean(k_i, i, B), st.rev_std[i - 1], i - 1, B)
                k = k_i
            self._push(stack, k, zeros, 1.0, T, B)
            return
        ks = [None] * (T + 1)
        ks[T] = self._pop(stack, st.alpha[T] * x, st.sigma[T], T)
        for i in range(T, 0, -1):
            ks[i - 1] = self._pop(stack, st.a[i - 1] * self._z(ks[i], i) + st.b[i - 1] * x, st.rev_std[i - 1], i - 1)
        track()
        self._push_x(stack, sym, ks[0], B)
        for i in range(1, T + 1):
            self._push(stack, ks[i - 1], self._p_mean(ks[i], i, B), st.rev_std[i - 1], i - 1, B)
        self._push(stack, ks[T], zeros, 1.0, T, B)

    def _decode_chunk(self, stack: AnsStack, n: int) -> np.ndarray:
        st, T = self.steps, self.num_steps
        zeros = np.zeros(n * math.prod(self.data_shape))
        if isinstance(self.order, Interleaved):
            k = self._pop_model(stack, zeros, 1.0, T, n)
            for i in range(T, 0, -1):
                k_prev = self._pop_model(stack, self._p_mean(k, i, n), st.rev_std[i - 1], i - 1, n)
                self._push_q(stack, k, st.fwd_coef[i - 1] * self._z(k_prev, i - 1), st.fwd_std[i - 1], i)
                k = k_prev
            levels = stack.pop_categorical(self._x_levels_probs(k, n))
            self._push_q(stack, k, st.alpha[0] * self._x(levels), st.sigma[0], 0)
            return levels.reshape((n, *self.data_shape))
        ks = [None] * (T + 1)
        ks[T] = self._pop_model(stack, zeros, 1.0, T, n)
        for i in range(T, 0, -1):
            ks[i - 1] = self._pop_model(stack, self._p_mean(ks[i], i, n), st.rev_std[i - 1], i - 1, n)
        levels = stack.pop_categorical(self._x_levels_probs(ks[0], n))
        x = self._x(levels)
        for i in range(1, T + 1):
            self._push_q(stack, ks[i - 1], st.a[i - 1] * self._z(ks[i], i) + st.b[i - 1] * x, st.rev_std[i - 1], i - 1)
        self._push_q(stack, ks[T], st.alpha[T] * x, st.sigma[T], T)
        return levels.reshape((n, *self.data_shape))

    def _push_x(self, stack: AnsStack, sym: np.ndarray, k0: np.ndarray, batch: int) -> None:
        probs = self._x_levels_probs(k0, batch)
        self._ledger(np.log2(probs[np.arange(sym.size), sym]), pushed=True)
        stack.push_categorical(sym, probs)

    def _push_q(self, stack: AnsStack, k, mean, std, i: int) -> None:
        """The inverse of `_pop` (the decoder giving the bits back); a symbol outside the window means that the
        stream was not made by this model."""
        mean = np.asarray(mean, np.float64)
        lo = np.rint(mean / self.delta[i]).astype(np.int64) - self.half_bins[i]
        n = 2 * int(self.half_bins[i]) + 1
        s = k - lo
        if s.size and (s.min() < 0 or s.max() >= n):
            raise StreamMismatchError(
                f"decoding latent {i}: a value outside the posterior's window; the stream was not written by this "
                "model and codec settings, or it is corrupted"
            )
        stds = np.broadcast_to(self._coded_std(std, i), mean.shape)
        stack.push_gaussian(s, mean / self.delta[i] - lo, stds, n)


def _reverse_mean(model, gammas, i, z):
    return jax.vmap(lambda zz: vp_reverse(model, gammas, i, zz)[0])(z)


def _x_probs(decoder, z0, alpha0, sigma0, num_levels: int):
    levels = 2.0 * jnp.arange(num_levels, dtype=z0.dtype) / (num_levels - 1) - 1.0
    x = jnp.broadcast_to(levels, z0.shape + (num_levels,))
    zz = jnp.broadcast_to(z0[..., None], x.shape)
    logp = decoder.log_prob(x, zz, alpha0, sigma0, num_levels)
    return jax.nn.softmax(logp, axis=-1)


_REVERSE_MEAN = eqx.filter_jit(_reverse_mean)
_X_PROBS = eqx.filter_jit(_x_probs)
_GAMMAS = eqx.filter_jit(vp_gammas)
