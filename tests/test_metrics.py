"""scoreflow.metrics: the digit classifier, class accuracy and the Fréchet distance, against closed forms."""

import os

import jax
import jaxtyping
import numpy as np
import pytest
import scipy.linalg

import scoreflow.data as sfd
import scoreflow.metrics as sfm
from scoreflow._metrics import classifier as _classifier


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("metrics_cache")


@pytest.fixture(scope="module")
def clf(cache):
    return sfm.digit_classifier(cache_dir=cache)


@pytest.fixture(scope="module")
def digits():
    return sfd.load_digits()


def test_digit_labels_match_sklearn(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert digits.num_classes == 10 and digits.train_labels.shape == (1500,) and digits.test_labels.shape == (297,)
    # each image's label is sklearn's label of the identical raw image
    levels = np.rint((digits.test[:, 0].astype(np.float64) + 1) * 8).astype(np.int64)
    flat = raw.images.reshape(len(raw.images), -1).astype(np.int64)
    for i in range(0, 297, 37):
        j = np.flatnonzero((flat == levels[i].reshape(-1)).all(axis=1))
        assert raw.target[j[0]] == digits.test_labels[i]


def test_classifier_accuracy(clf, digits):
    # measured 0.983 on the held-out 297 test digits (seed 0); 0.95 leaves room for other BLAS / jax versions
    acc = sfm.class_accuracy(clf, digits.test, digits.test_labels)
    assert acc > 0.95, acc
    # the same images with shuffled labels: chance (0.1), measured 0.12
    shuffled = np.random.default_rng(0).permutation(digits.test_labels)
    assert sfm.class_accuracy(clf, digits.test, shuffled) < 0.25
    # labels shifted by one class: every prediction now disagrees with its label on a correctly classified image
    assert sfm.class_accuracy(clf, digits.test, (digits.test_labels + 1) % 10) < 0.05


def test_classifier_cache(clf, cache, monkeypatch, capsys):
    files = [f for f in os.listdir(cache) if f.endswith(".sfck")]
    assert len(files) == 1 and not [f for f in os.listdir(cache) if f.endswith(".tmp")]
    calls = []
    monkeypatch.setattr(_classifier, "train_digit_classifier", lambda **kw: calls.append(kw) or clf)
    again = sfm.digit_classifier(cache_dir=cache)  # loaded, not trained
    assert calls == []
    for a, b in zip(jax.tree.leaves(clf), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a corrupted cache file is replaced by a freshly trained classifier, loudly
    path = os.path.join(cache, files[0])
    blob = bytearray(open(path, "rb").read())
    blob[-5] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    sfm.digit_classifier(cache_dir=cache)
    assert len(calls) == 1 and "unusable" in capsys.readouterr().err
    sfm.digit_classifier(cache_dir=cache)  # the replacement verifies
    assert len(calls) == 1


def test_training_is_deterministic(digits):
    x, y = digits.train[:64], digits.train_labels[:64]
    a = sfm.train_digit_classifier(x, y, seed=3, steps=4)
    b = sfm.train_digit_classifier(x, y, seed=3, steps=4)
    c = sfm.train_digit_classifier(x, y, seed=4, steps=4)
    la, lb, lc = (np.concatenate([np.ravel(t) for t in jax.tree.leaves(m)]) for m in (a, b, c))
    np.testing.assert_array_equal(la, lb)
    assert np.abs(la - lc).max() > 1e-3


def _spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_closed_forms():
    rng = np.random.default_rng(0)
    # commuting (diagonal) covariances: |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    exact = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert abs(sfm.frechet_distance(m1, np.diag(a), m2, np.diag(b)) - exact) < 1e-10
    # non-commuting 2x2: tr (S1^1/2 S2 S1^1/2)^1/2 = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2))
    s1, s2 = _spd(rng, 2), _spd(rng, 2)
    assert abs(s1 @ s2 - s2 @ s1).max() > 0.1
    cross = np.sqrt(np.trace(s1 @ s2) + 2 * np.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    exact = np.sum((m1[:2] - m2[:2]) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    assert abs(sfm.frechet_distance(m1[:2], s1, m2[:2], s2) - exact) < 1e-10
    # general d = 20 against scipy's sqrtm of the non-symmetric product (the usual FID code)
    s1, s2 = _spd(rng, 20), _spd(rng, 20)
    m1, m2 = rng.standard_normal(20), rng.standard_normal(20)
    ref = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert abs(sfm.frechet_distance(m1, s1, m2, s2) - ref) < 1e-8 * ref
    assert sfm.frechet_distance(m1, s1, m2, s2) == pytest.approx(sfm.frechet_distance(m2, s2, m1, s1), rel=1e-10)
    # rank-deficient covariance (fewer samples than features): real, finite, >= 0, and 0 against itself
    f = rng.standard_normal((5, 20))
    mu, cov = sfm.feature_statistics(f)
    assert sfm.frechet_distance(mu, cov, mu, cov) < 1e-9
    assert np.isfinite(sfm.frechet_distance(mu, cov, m2, s2))


def test_frechet_of_features(clf, digits):
    x = digits.test
    assert sfm.frechet_feature_distance(clf, x, x) < 1e-6
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    d = [sfm.frechet_feature_distance(clf, x + s * noise, x) for s in (0.1, 0.2, 0.4)]
    assert 0 < d[0] < d[1] < d[2], d
    # a class-conditional set against the whole test set: far more than a resampled test half against the other
    half = sfm.frechet_feature_distance(clf, x[::2], x[1::2])
    ones = sfm.frechet_feature_distance(clf, x[digits.test_labels == 1], x)
    assert ones > 3 * half, (ones, half)


def test_errors(clf, digits):
    # (the test run's beartype check refuses a wrong shape before our message can; without it, ours names it)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):
        sfm.class_accuracy(clf, digits.test[:, 0], digits.test_labels)
    with pytest.raises(ValueError, match=r"`images` must be 8x8 digit images .*\(297, 8, 8\)"):
        _classifier._check_images(digits.test[:, 0])
    with pytest.raises(ValueError, match=r"`labels` must be 297 integer digit classes in 0..9"):
        sfm.class_accuracy(clf, digits.test, digits.test_labels + 1)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="cov1"):
        sfm.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        sfm.classifier_features(clf, np.full((2, 1, 8, 8), np.nan, np.float32))
