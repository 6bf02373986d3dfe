"""Class accuracy and the Fréchet distance between Gaussian fits of classifier features (host-side, float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from .classifier import DigitClassifier, _check_images, _check_labels


_CHUNK = 512


@eqx.filter_jit
def _apply(classifier: DigitClassifier, x, features: bool):
    f = classifier.features if features else classifier
    return jax.vmap(f)(x)


def _batched(classifier: DigitClassifier, images: np.ndarray, features: bool) -> np.ndarray:
    x = _check_images(images)
    out = [np.asarray(_apply(classifier, jnp.asarray(x[i : i + _CHUNK]), features)) for i in range(0, len(x), _CHUNK)]
    return np.concatenate(out).astype(np.float64)


def classifier_features(classifier: DigitClassifier, images: Float[np.ndarray, "n 1 8 8"]) -> np.ndarray:
    """The penultimate-layer features `(n, 64)` (float64) of each image."""
    return _batched(classifier, images, features=True)


def predict_classes(classifier: DigitClassifier, images: Float[np.ndarray, "n 1 8 8"]) -> np.ndarray:
    """The predicted digit `(n,)` (argmax of the logits) of each image."""
    return np.argmax(_batched(classifier, images, features=False), axis=-1)


def class_accuracy(
    classifier: DigitClassifier, images: Float[np.ndarray, "n 1 8 8"], labels: Int[np.ndarray, " n"]
) -> float:
    """The fraction of images the classifier assigns to the class they were generated for, `labels[i]`."""
    y = _check_labels(labels, np.asarray(images).shape[0])
    return float(np.mean(predict_classes(classifier, images) == y))


def feature_statistics(features: Float[np.ndarray, "n d"]) -> tuple[np.ndarray, np.ndarray]:
    """The mean `(d,)` and unbiased covariance `(d, d)` of `n >= 2` feature vectors (float64)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"`features` must be (n, d) with n >= 2; got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mean1: Float[np.ndarray, " d"],
    cov1: Float[np.ndarray, "d d"],
    mean2: Float[np.ndarray, " d"],
    cov2: Float[np.ndarray, "d d"],
) -> float:
    r"""The squared Fréchet (2-Wasserstein) distance between $N(\mu_1, \Sigma_1)$ and $N(\mu_2, \Sigma_2)$:

    $\|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
    - 2 \operatorname{tr}\big(\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2}\big)^{1/2}$ (Dowson & Landau, 1982; FID,
    Heusel et al., 2017). Both square roots are of symmetric PSD matrices and come from eigendecompositions with
    round-off negatives clipped, so a singular covariance (fewer samples than features) is handled and the result
    is real; it is clipped at 0.
    """
    m1, m2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    s1, s2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = m1.shape[0] if m1.ndim == 1 else -1
    for name, a, shape in (("mean2", m2, (d,)), ("cov1", s1, (d, d)), ("cov2", s2, (d, d))):
        if m1.ndim != 1 or a.shape != shape:
            raise ValueError(f"`{name}` must have shape {shape} to match `mean1` {m1.shape}; got {a.shape}")
    r = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0.0, None)).sum()
    return float(max(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * cross, 0.0))


def frechet_feature_distance(
    classifier: DigitClassifier, images: Float[np.ndarray, "n 1 8 8"], reference: Float[np.ndarray, "m 1 8 8"]
) -> float:
    """The Fréchet distance between Gaussian fits of the classifier features of `images` and of `reference`
    (the digits analogue of FID). Like FID it is biased upwards at small sample sizes: compare sets of equal size."""
    a = feature_statistics(classifier_features(classifier, images))
    b = feature_statistics(classifier_features(classifier, reference))
    return frechet_distance(*a, *b)
