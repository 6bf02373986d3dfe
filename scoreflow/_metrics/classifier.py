"""A small convolutional digit classifier, trained locally on the built-in 8x8 digits, for offline sample metrics.

It plays the part Inception-v3 plays for FID on ImageNet (Heusel et al., 2017): its penultimate layer gives the
features whose Gaussian statistics the Fréchet distance compares, and its predicted class gives the class accuracy
of class-conditional samples. Nothing is downloaded: the network is trained here on `scoreflow.data.load_digits`'
training split, deterministically from a seed, and cached (see `digit_classifier`).
"""

import hashlib
import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray


CLASSIFIER_VERSION = 1
"""Bumped whenever the architecture or the training recipe changes, so an old cached classifier is not reused."""

NUM_FEATURES = 64
_TRAIN_STEPS = 500
_BATCH = 64
_NOISE = 0.3  # Gaussian input noise while training: samples are continuous, not on the 17 grey levels


def _conv3x3(conv: eqx.nn.Conv2d, x: Float[Array, "c h w"]) -> Float[Array, "o h w"]:
    """A 3x3 'same' convolution as one matmul over the nine shifted copies of `x` (im2col). On XLA:CPU, under
    load, this trains several times faster than `lax.conv` inside the training scan; the result is the same."""
    c, h, w = x.shape
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1)))
    patches = jnp.stack([p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=1)  # c 9 h w
    y = jnp.einsum("ok,khw->ohw", conv.weight.reshape(conv.out_channels, c * 9), patches.reshape(c * 9, h, w))
    return y + conv.bias


class DigitClassifier(eqx.Module):
    r"""Conv(1→16, 3x3) → ReLU → Conv(16→32, 3x3) → ReLU → 2x2 max-pool → Linear(512→64) → ReLU (features
    $\phi(x) \in \mathbb{R}^{64}$) → Linear(64→10) (logits), for one `(1, 8, 8)` image in $[-1, 1]$.

    Build with `train_digit_classifier` or `digit_classifier`; the constructor gives untrained weights.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    hidden: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, *, key: PRNGKeyArray):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = eqx.nn.Conv2d(1, 16, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(16, 32, 3, padding=1, key=k2)
        self.hidden = eqx.nn.Linear(32 * 4 * 4, NUM_FEATURES, key=k3)
        self.head = eqx.nn.Linear(NUM_FEATURES, 10, key=k4)

    def features(self, x: Float[Array, "1 8 8"]) -> Float[Array, " 64"]:
        """The penultimate-layer features $\\phi(x)$ (after the ReLU), the space of the Fréchet distance."""
        h = jax.nn.relu(_conv3x3(self.conv1, x))
        h = jax.nn.relu(_conv3x3(self.conv2, h))
        h = h.reshape(32, 4, 2, 4, 2).max(axis=(2, 4))
        return jax.nn.relu(self.hidden(h.reshape(-1)))

    def __call__(self, x: Float[Array, "1 8 8"]) -> Float[Array, " 10"]:
        """Class logits."""
        return self.head(self.features(x))


def _check_images(images, name: str = "images") -> np.ndarray:
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1:] != (1, 8, 8):
        raise ValueError(f"`{name}` must be 8x8 digit images of shape (n, 1, 8, 8); got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or inf ({int(np.sum(~np.isfinite(x)))} values)")
    return x.astype(np.float32)


def _check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise ValueError(
            f"`{name}` must be {n} integer digit classes in 0..9 (one per image); got dtype {y.dtype}, shape "
            f"{y.shape}" + (f", range {y.min()}..{y.max()}" if y.size and np.issubdtype(y.dtype, np.number) else "")
        )
    return y.astype(np.int32)


def train_digit_classifier(
    images: Float[np.ndarray, "n 1 8 8"] | None = None,
    labels: Int[np.ndarray, " n"] | None = None,
    *,
    seed: int = 0,
    steps: int = _TRAIN_STEPS,
) -> DigitClassifier:
    """Train a `DigitClassifier` (Adam, cross-entropy, minibatches of 64, Gaussian input noise 0.3).

    `images`/`labels` default to the training split of `scoreflow.data.load_digits()` (1500 images); the test
    split is never seen. The result is a deterministic function of the data, `seed` and `steps` on one machine.
    """
    if images is None or labels is None:
        if images is not None or labels is not None:
            raise ValueError("give both `images` and `labels`, or neither (the built-in digits training split)")
        from ..data import load_digits

        ds = load_digits()
        images, labels = ds.train, ds.train_labels
    x = jnp.asarray(_check_images(images))
    y = jnp.asarray(_check_labels(labels, x.shape[0]))
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"`steps` must be a positive int; got steps={steps!r}")
    model = DigitClassifier(key=jax.random.fold_in(jax.random.key(seed), 0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return eqx.combine(_train(params, static, x, y, jax.random.key(seed), steps), static)


@eqx.filter_jit
def _train(params, static, x, y, key, steps: int):
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.05))

    def loss(params, xb, yb):
        logits = jax.vmap(eqx.combine(params, static))(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, i):
        params, opt_state = carry
        k1, k2 = jax.random.split(jax.random.fold_in(key, i + 1))
        idx = jax.random.choice(k1, x.shape[0], (min(_BATCH, x.shape[0]),), replace=False)
        xb = x[idx] + _NOISE * jax.random.normal(k2, x[idx].shape, x.dtype)
        g = jax.grad(loss)(params, xb, y[idx])
        updates, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params


def _default_cache_dir() -> str:
    """`$SCOREFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/scoreflow`, else `~/.cache/scoreflow`."""
    if os.environ.get("SCOREFLOW_CACHE_DIR"):
        return os.environ["SCOREFLOW_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "scoreflow")


def _cache_name(seed: int, steps: int) -> str:
    from ..data import load_digits

    ds = load_digits()
    h = hashlib.sha256()
    for a in (ds.train, ds.train_labels):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"v{CLASSIFIER_VERSION}-seed{seed}-steps{steps}-jax{jax.__version__}".encode())
    return f"digit-classifier-v{CLASSIFIER_VERSION}-{h.hexdigest()[:16]}.sfck"


def digit_classifier(
    *, seed: int = 0, steps: int = _TRAIN_STEPS, cache_dir: str | os.PathLike | None = None
) -> DigitClassifier:
    """The digit classifier of `train_digit_classifier(seed=seed, steps=steps)` on the built-in training split,
    trained once and then loaded from a cache file.

    The file lives in `cache_dir` (default: `$SCOREFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/scoreflow`, else
    `~/.cache/scoreflow`), is named by a hash of the training data, `seed`, `steps`, the classifier version and the
    jax version, and is written atomically with a SHA-256 (`scoreflow.train.save_checkpoint`), so concurrent
    callers and killed writers never leave a half-written file. A cache file that fails verification is replaced
    (with a warning on stderr); a cache folder that cannot be written is reported and the classifier returned
    anyway. Training takes about 5-20 s on 2 CPU cores.
    """
    from ..train import CheckpointError, load_checkpoint, save_checkpoint

    folder = os.fspath(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = os.path.join(folder, _cache_name(seed, steps))
    like = DigitClassifier(key=jax.random.key(0))
    if os.path.exists(path):
        try:
            model, _ = load_checkpoint(path, like)
            return model
        except CheckpointError as e:
            print(f"warning: cached digit classifier unusable ({e}); training it again", file=sys.stderr)
    model = train_digit_classifier(seed=seed, steps=steps)
    try:
        save_checkpoint(path, model, {"seed": seed, "steps": steps, "version": CLASSIFIER_VERSION})
    except (OSError, CheckpointError) as e:
        print(
            f"warning: could not cache the digit classifier in {folder} ({e}); it will be trained again",
            file=sys.stderr,
        )
    return model
