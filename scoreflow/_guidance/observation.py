r"""Linear observation operators $y = A x + \nu\,\epsilon$ for conditional generation (inpainting, colourisation,
super-resolution), acting on one example of any shape through its flattened vector.

Each operator gives its dense matrix $A$ (m, d) with full row rank, a right inverse $A^+$ and an orthonormal basis $N$
of its null space, with $A A^+ = I$ and $A^+ A + N N^\top = I$; so every $x$ is $A^+ (A x) + N (N^\top x)$. The
dense factors are computed once, eagerly, at construction (NumPy), never inside a compiled loop.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float


class AbstractObservation(eqx.Module):
    r"""Strategy: $y = A\,\mathrm{vec}(x) + \nu\epsilon$ with $A$ of full row rank, $\nu$ = `noise` $\geq 0$."""

    shape: eqx.AbstractVar[tuple[int, ...]]
    noise: eqx.AbstractVar[float]

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    @abc.abstractmethod
    def matrix(self) -> Float[Array, "m d"]:
        """The dense matrix $A$ on the flattened example."""

    @abc.abstractmethod
    def right_inverse(self) -> Float[Array, "d m"]:
        """$A^+$ with $A A^+ = I$ (the Moore-Penrose pseudo-inverse)."""

    @abc.abstractmethod
    def null_basis(self) -> Float[Array, "d r"]:
        """An orthonormal basis $N$ of the null space of $A$, $r = d - m$."""

    @property
    def num_observed(self) -> int:
        return int(self.matrix().shape[0])

    def _flat(self, x: Array) -> Array:
        if jnp.shape(x) != self.shape:
            raise ValueError(f"the observation acts on examples of shape {self.shape}; got x of shape {jnp.shape(x)}")
        return jnp.reshape(x, (-1,))

    def __call__(self, x: Float[Array, "*data"]) -> Float[Array, " m"]:
        """$A\\,\\mathrm{vec}(x)$ (noise-free)."""
        return self.matrix().astype(jnp.result_type(x)) @ self._flat(x)

    def transpose(self, r: Float[Array, " m"]) -> Float[Array, "*data"]:
        """$A^\\top r$, reshaped to an example."""
        return jnp.reshape(self.matrix().T.astype(jnp.result_type(r)) @ r, self.shape)

    def replace(self, x: Float[Array, "*data"], z: Float[Array, " m"]) -> Float[Array, "*data"]:
        r"""The example whose observed part is `z` and whose unobserved part is that of `x`:
        $x + A^+(z - A x)$ (for a `Mask`: `x` with the known coordinates set to `z`)."""
        flat = self._flat(x)
        dt = jnp.result_type(x)
        out = flat + self.right_inverse().astype(dt) @ (z - self.matrix().astype(dt) @ flat)
        return jnp.reshape(out, self.shape)

    def embed(self, y: Float[Array, " m"], z: Float[Array, " r"]) -> Float[Array, "*data"]:
        """$A^+ y + N z$: the example observed as `y` (noise-free) with free coordinates `z`."""
        dt = jnp.result_type(y, z)
        return jnp.reshape(self.right_inverse().astype(dt) @ y + self.null_basis().astype(dt) @ z, self.shape)

    def free(self, x: Float[Array, "*data"]) -> Float[Array, " r"]:
        """$N^\\top x$: the coordinates of `x` that a noise-free observation does not see."""
        return self.null_basis().T.astype(jnp.result_type(x)) @ self._flat(x)


def _check_noise(owner: str, noise) -> float:
    try:
        value = float(noise)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{owner} needs `noise` to be a real number >= 0; got noise={noise!r}") from e
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{owner} needs `noise` to be finite and >= 0; got noise={noise!r}")
    return value


def _factors(a: np.ndarray, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-inverse and orthonormal null basis of a full-row-rank `a`, from one SVD."""
    m, d = a.shape
    u, s, vt = np.linalg.svd(a)
    if m > d or s.min() <= s.max() * max(m, d) * np.finfo(np.float64).eps:
        raise ValueError(f"{owner} needs a matrix of full row rank (m <= d, independent rows); singular values {s}")
    pinv = vt[:m].T @ ((u.T) / s[:, None])
    return pinv, vt[m:].T


class Mask(AbstractObservation):
    r"""Inpainting: $y = x[\text{known}] + \nu\epsilon$, the known coordinates of the example.

    **Arguments:** `known`: a boolean array of the example's shape, True where the value is observed (at least one
    True, at least one False); `noise`: $\nu \geq 0$ (default 0).
    """

    indices: tuple[int, ...] = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    noise: float = eqx.field(static=True)

    def __init__(self, known: Bool[ArrayLike, "*data"], noise: float = 0.0):
        mask = np.asarray(known)
        if mask.dtype != np.bool_:
            raise TypeError(f"Mask needs `known` to be a boolean array of the example's shape; got dtype {mask.dtype}")
        if mask.ndim == 0 or not mask.any() or mask.all():
            raise ValueError(
                f"Mask needs `known` to mark at least one known and one unknown coordinate; got {mask.tolist()}"
            )
        self.indices = tuple(int(i) for i in np.flatnonzero(mask.reshape(-1)))
        self.shape = tuple(int(s) for s in mask.shape)
        self.noise = _check_noise("Mask", noise)

    def _unknown(self) -> np.ndarray:
        keep = np.ones(self.dim, bool)
        keep[list(self.indices)] = False
        return np.flatnonzero(keep)

    def matrix(self):
        return jnp.asarray(np.eye(self.dim)[list(self.indices)])

    def right_inverse(self):
        return self.matrix().T

    def null_basis(self):
        return jnp.asarray(np.eye(self.dim)[:, self._unknown()])

    # Index arithmetic instead of dense products: exact, and O(d) for images.
    def __call__(self, x):
        return self._flat(x)[jnp.asarray(self.indices)]

    def transpose(self, r):
        return jnp.reshape(jnp.zeros(self.dim, jnp.result_type(r)).at[jnp.asarray(self.indices)].set(r), self.shape)

    def replace(self, x, z):
        flat = self._flat(x).at[jnp.asarray(self.indices)].set(jnp.asarray(z, jnp.result_type(x)))
        return jnp.reshape(flat, self.shape)

    def free(self, x):
        return self._flat(x)[jnp.asarray(self._unknown())]


class Linear(AbstractObservation):
    r"""$y = A\,\mathrm{vec}(x) + \nu\epsilon$ for a dense `A` (m, d) of full row rank, e.g. average pooling for
    super-resolution. **Arguments:** `A`; `shape` of one example (default `(d,)`); `noise` $\nu \geq 0$."""

    A: Float[Array, "m d"]
    pinv: Float[Array, "d m"]
    null: Float[Array, "d r"]
    shape: tuple[int, ...] = eqx.field(static=True)
    noise: float = eqx.field(static=True)

    def __init__(self, A: ArrayLike, shape: tuple[int, ...] | None = None, noise: float = 0.0):
        a = np.asarray(A, np.float64)
        if a.ndim != 2:
            raise ValueError(f"Linear needs `A` of shape (m, d); got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("Linear needs a finite `A`")
        shape = (a.shape[1],) if shape is None else tuple(int(s) for s in shape)
        if int(np.prod(shape)) != a.shape[1]:
            raise ValueError(
                f"Linear: `shape` {shape} has {int(np.prod(shape))} entries but A has {a.shape[1]} columns"
            )
        pinv, null = _factors(a, "Linear")
        dtype = jnp.result_type(float)
        self.A, self.pinv, self.null = jnp.asarray(a, dtype), jnp.asarray(pinv, dtype), jnp.asarray(null, dtype)
        self.shape = shape
        self.noise = _check_noise("Linear", noise)

    def matrix(self):
        return self.A

    def right_inverse(self):
        return self.pinv

    def null_basis(self):
        return self.null


class OrthogonalSplit(AbstractObservation):
    r"""$y = Q_{:m}\,\mathrm{vec}(x) + \nu\epsilon$: the first `num_known` rows of an orthogonal `Q` (d, d) are
    observed, the rest are free (colourisation: the grey level is one orthonormal direction of each pixel's colour).
    No factorisation: $A^+ = Q_{:m}^\top$, $N = Q_{m:}^\top$."""

    Q: Float[Array, "d d"]
    num_known: int = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    noise: float = eqx.field(static=True)

    def __init__(self, Q: ArrayLike, num_known: int, shape: tuple[int, ...] | None = None, noise: float = 0.0):
        q = np.asarray(Q, np.float64)
        if q.ndim != 2 or q.shape[0] != q.shape[1]:
            raise ValueError(f"OrthogonalSplit needs a square `Q`; got shape {q.shape}")
        err = np.max(np.abs(q @ q.T - np.eye(q.shape[0])))
        if not err < 1e-6:
            raise ValueError(f"OrthogonalSplit needs an orthogonal `Q` (Q Q^T = I); max |Q Q^T - I| = {err:.3g}")
        if not 0 < num_known < q.shape[0]:
            raise ValueError(f"OrthogonalSplit needs 0 < num_known < d = {q.shape[0]}; got {num_known}")
        shape = (q.shape[0],) if shape is None else tuple(int(s) for s in shape)
        if int(np.prod(shape)) != q.shape[0]:
            raise ValueError(f"OrthogonalSplit: `shape` {shape} does not have d = {q.shape[0]} entries")
        self.Q = jnp.asarray(q, jnp.result_type(float))
        self.num_known = int(num_known)
        self.shape = shape
        self.noise = _check_noise("OrthogonalSplit", noise)

    def matrix(self):
        return self.Q[: self.num_known]

    def right_inverse(self):
        return self.Q[: self.num_known].T

    def null_basis(self):
        return self.Q[self.num_known :].T
