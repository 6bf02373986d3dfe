"""Data edge: built-in digits, toy mixtures, user files, bad-data errors and bits/dim baselines."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import scoreflow.data as sfd


def test_digits_split_and_scaling():
    from sklearn.datasets import load_digits

    ds = sfd.load_digits()
    assert ds.num_levels == 17 and ds.shape == (1, 8, 8) and ds.dim == 64
    assert ds.train.shape == (1500, 1, 8, 8) and ds.test.shape == (297, 1, 8, 8)
    assert ds.train.min() == -1.0 and ds.train.max() == 1.0
    # Every value lies exactly on the 17-level grid, and the split is a partition of sklearn's images.
    k = np.concatenate([ds.levels("train"), ds.levels("test")])
    np.testing.assert_array_equal(sfd._dataset.scale_levels(k, 17), np.concatenate([ds.train, ds.test]))
    ref = load_digits().images.astype(np.int64).reshape(1797, -1)
    key = lambda a: np.lexsort(a.T[::-1])
    got = k.reshape(1797, -1)
    np.testing.assert_array_equal(got[key(got)], ref[key(ref)])
    # Fixed seed: the same split every time; another seed: another split.
    np.testing.assert_array_equal(sfd.load_digits().test, ds.test)
    assert not np.array_equal(sfd.load_digits(seed=1).test, ds.test)


def test_categorical_baseline_analytic():
    # Two levels; training pixels all 0 (N = 2): p(0) = 3/4, p(1) = 1/4 with add-one smoothing.
    train = -np.ones((2, 1, 2, 2), np.float32)
    ds = sfd.Dataset("t", train, np.ones((3, 1, 2, 2), np.float32), 2, "test")
    assert sfd.categorical_bits_per_dim(ds) == pytest.approx(2.0, abs=1e-12)
    ds = sfd.Dataset("t", train, -np.ones((3, 1, 2, 2), np.float32), 2, "test")
    assert sfd.categorical_bits_per_dim(ds) == pytest.approx(-math.log2(0.75), abs=1e-12)


def test_compressors_cannot_beat_entropy_of_uniform_levels():
    rng = np.random.default_rng(0)
    k = rng.integers(0, 17, size=(400, 1, 8, 8))
    x = sfd._dataset.scale_levels(k, 17)
    ds = sfd.Dataset("u", x, x, 17, "uniform")
    out = sfd.compressor_bits_per_dim(ds)
    # Entropy is log2(17) = 4.087 bits/dim; lossless compressors stay above it (and PNG/xz below 8 bits).
    for name in ("png", "xz"):
        assert math.log2(17) - 0.01 < out[name] < 8.0, (name, out[name])
    # Fitted on 400 other draws per pixel, the categorical model's cross-entropy is the entropy plus the
    # expected KL of the smoothed estimate, about (L - 1) / (2 N ln 2) = 0.029 bits.
    fresh = sfd._dataset.scale_levels(rng.integers(0, 17, size=(400, 1, 8, 8)), 17)
    bpd = sfd.categorical_bits_per_dim(sfd.Dataset("u", fresh, x, 17, "uniform"))
    assert math.log2(17) < bpd < math.log2(17) + 0.06


def test_digits_baselines_values():
    b = sfd.baselines(sfd.load_digits())
    # Reference numbers of the fixed split (seed 0), measured once and pinned.
    assert b["categorical"] == pytest.approx(2.4221, abs=1e-3)
    assert b["xz"] == pytest.approx(2.894, abs=0.01)
    assert b["categorical"] < b["xz"] < b["png"] < math.log2(256)


def test_toy_mixture_density():
    ds = sfd.load_toy("ring8", n_train=4000, n_test=1000, seed=0)
    assert ds.num_levels is None and ds.shape == (2,)
    # Ring of 8 equal Gaussians at radius 2, std 0.15: mean 0, radius of samples ~ 2.
    se = 2.2 / math.sqrt(4000)
    np.testing.assert_allclose(ds.train.mean(0), 0.0, atol=4 * se)
    np.testing.assert_allclose(np.mean(np.linalg.norm(ds.train, axis=1)), 2.0, atol=0.02)
    # The attached density integrates to ~1 on a grid.
    g = np.linspace(-3.5, 3.5, 281)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    mass = np.exp(np.asarray(ds.density.log_prob(jnp.asarray(xy)))).sum() * (g[1] - g[0]) ** 2
    assert mass == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="unknown toy mixture 'nope'"):
        sfd.toy_mixture("nope")


def test_npy_and_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    k = rng.integers(0, 256, size=(20, 6, 6))
    p = tmp_path / "imgs.npy"
    np.save(p, k.astype(np.uint8))
    ds = sfd.load_array_file(p, bits=8)
    assert ds.num_levels == 256 and ds.shape == (1, 6, 6) and len(ds.test) == 2
    got = np.concatenate([ds.levels("train"), ds.levels("test")])[:, 0].reshape(20, -1)
    assert sorted(map(tuple, got)) == sorted(map(tuple, k.reshape(20, -1)))
    # npz with an explicit split, channels-last RGB images.
    q = tmp_path / "split.npz"
    tr, te = rng.integers(0, 16, size=(5, 6, 6, 3)), rng.integers(0, 16, size=(3, 6, 6, 3))
    np.savez(q, train=tr, test=te)
    ds = sfd.load_array_file(q, bits=4)
    assert ds.num_levels == 16 and ds.shape == (3, 6, 6)
    np.testing.assert_array_equal(ds.levels("test"), np.moveaxis(te, -1, 1))


def test_png_folder_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    k = rng.integers(0, 256, size=(6, 5, 7)).astype(np.uint8)
    for i, a in enumerate(k):
        Image.fromarray(a, mode="L").save(tmp_path / f"{i:02d}.png")
    ds = sfd.load_png_folder(tmp_path, bits=8, test_size=2)
    assert ds.shape == (1, 5, 7) and len(ds.train) == 4 and len(ds.test) == 2
    got = np.concatenate([ds.levels("train"), ds.levels("test")])[:, 0]
    assert sorted(a.tobytes() for a in got.astype(np.uint8)) == sorted(a.tobytes() for a in k)


def test_bad_array_files(tmp_path):
    p = tmp_path / "nan.npy"
    np.save(p, np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(sfd.DataError, match=rf"{p}.*NaN"):
        sfd.load_array_file(p, bits=8)
    p = tmp_path / "range.npy"
    np.save(p, np.array([[0, 256], [1, 2]]))
    with pytest.raises(sfd.DataError, match=rf"{p}.*\[0, 256\], outside \[0, 255\].*bit depth 8"):
        sfd.load_array_file(p, bits=8)
    with pytest.raises(sfd.DataError, match=rf"{p}.*outside \[0, 1\]"):
        np.save(p, np.array([[0, 2], [1, 0]]))
        sfd.load_array_file(p, bits=1)
    p = tmp_path / "frac.npy"
    np.save(p, np.array([[0.5, 1.0], [1.0, 2.0]]))
    with pytest.raises(sfd.DataError, match=rf"{p}.*non-integers"):
        sfd.load_array_file(p, bits=8)
    p = tmp_path / "ragged.npy"
    np.save(p, np.array([np.zeros(3), np.zeros(4)], dtype=object), allow_pickle=True)
    with pytest.raises(sfd.DataError, match=rf"{p}.*ragged"):
        sfd.load_array_file(p, bits=8)
    p = tmp_path / "ragged.npz"
    np.savez(p, train=np.zeros((3, 4, 4)), test=np.zeros((3, 5, 5)))
    with pytest.raises(sfd.DataError, match=rf"{p}.*\(1, 4, 4\).*\(1, 5, 5\)"):
        sfd.load_array_file(p, bits=8)
    with pytest.raises(sfd.DataError, match=r"missing\.npy: no such file"):
        sfd.load_array_file(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="`bits`.*bits=0"):
        sfd.load_array_file(tmp_path / "frac.npy", bits=0)


def test_bad_png_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(sfd.DataError, match=rf"{empty}: the folder contains no \.png files"):
        sfd.load_png_folder(empty)
    with pytest.raises(sfd.DataError, match="no such folder"):
        sfd.load_png_folder(tmp_path / "nowhere")
    ragged = tmp_path / "ragged"
    ragged.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(ragged / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(ragged / "b.png")
    with pytest.raises(sfd.DataError, match=r"b\.png: image of shape .*\(1, 5, 4\) differs from .*a\.png"):
        sfd.load_png_folder(ragged)
    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(deep / "a.png")
    with pytest.raises(sfd.DataError, match=r"a\.png: values lie in \[200, 200\], outside \[0, 15\]"):
        sfd.load_png_folder(deep, bits=4)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(sfd.DataError, match=r"x\.png: not a readable PNG"):
        sfd.load_png_folder(broken)
