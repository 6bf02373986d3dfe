"""`scoreflow compress` / `scoreflow decompress` end to end on a tiny trained run: exact round trips through .npy
(dtype kept) and PNG folders (pixels kept; a coarse `--matched-variance` grid read back from the header),
`--check`, and named errors that leave a good output file alone (corrupted or truncated file, data outside the
model's levels)."""

import os

import jax
import numpy as np
import pytest

from scoreflow._cli.main import main

from .helpers import cli_exits_2


LEVELS = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-step VDM run on 4x4 images with 4 levels (the network barely trained: any model codes losslessly)."""
    root = tmp_path_factory.mktemp("compress")
    data = root / "train.npy"
    np.save(data, np.random.default_rng(0).integers(0, LEVELS, size=(24, 1, 4, 4)))
    out = str(root / "run")
    argv = ["train", "--data", str(data), "--bits", "2", "--channels", "8", "--schedule", "fixed-linear"]
    argv += ["--steps", "1", "--warmup", "1", "--batch-size", "8", "--eval-repeats", "1", "--nll-examples", "0"]
    argv += ["--num-samples", "1", "--sampler", "ddim", "--sample-steps", "1", "--no-progress"]
    jax.config.update("jax_enable_x64", False)  # train as a user would (float32); the codec switches x64 on itself
    try:
        assert main([*argv, "--checkpoint-every", "1", "--out", out]) == 0
    finally:
        jax.config.update("jax_enable_x64", True)
    return out


def _images(n, seed=1, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, LEVELS, size=(n, 1, 4, 4)).astype(dtype)


def test_npy_round_trip_exact_with_check_and_bound(run, tmp_path, capsys):
    x = _images(5)
    src, packed, back = tmp_path / "x.npy", tmp_path / "x.sfbb", tmp_path / "back.npy"
    np.save(src, x)
    common = ["--steps", "3", "--batch-size", "2", "--no-progress"]
    assert main(["compress", run, str(src), str(packed), *common, "--check"]) == 0
    out = capsys.readouterr().out
    assert "5 images" in out and "bits/dim" in out and "T=3 bound" in out and "SHA-256 verified" in out
    assert main(["decompress", run, str(packed), str(back), "--no-progress"]) == 0
    y = np.load(back)
    assert y.dtype == x.dtype and np.array_equal(y, x)
    # no temporary files left next to the outputs
    assert sorted(os.listdir(tmp_path)) == ["back.npy", "x.npy", "x.sfbb"]


def test_png_folder_round_trip_on_a_coarse_matched_grid(run, tmp_path, capsys):
    from PIL import Image

    src, packed, back = tmp_path / "pngs", tmp_path / "p.sfbb", tmp_path / "back"
    src.mkdir()
    x = _images(3, seed=2)
    for i, img in enumerate(x):  # 8-bit PNGs of the 4 levels spaced by 255 / 3
        Image.fromarray((img[0] * 85).astype(np.uint8), mode="L").save(src / f"d{i}.png")
    grid = ["--bins-per-std", "4", "--matched-variance"]  # decompress takes the grid from the file's header
    assert main(["compress", run, str(src), str(packed), "--steps", "2", *grid, "--no-bound", "--no-progress"]) == 0
    import scoreflow as sf

    codec = sf.read_compressed_header(packed.read_bytes())["codec"]
    assert (codec["bins_per_std"], codec["matched_variance"]) == (4, True)
    assert main(["decompress", run, str(packed), str(back), "--no-progress"]) == 0
    assert sorted(os.listdir(back)) == ["d0.png", "d1.png", "d2.png"]
    for i in range(3):
        with Image.open(back / f"d{i}.png") as a, Image.open(src / f"d{i}.png") as b:
            assert a.mode == b.mode == "L" and np.array_equal(np.asarray(a), np.asarray(b))
    capsys.readouterr()


def test_corrupted_and_truncated_files_are_named_and_leave_output_alone(run, tmp_path, capsys):
    src, packed = tmp_path / "x.npy", tmp_path / "x.sfbb"
    np.save(src, _images(2, seed=3, dtype=np.int64))
    assert main(["compress", run, str(src), str(packed), "--steps", "3", "--no-bound", "--no-progress"]) == 0
    blob = packed.read_bytes()
    good = tmp_path / "good.npy"
    good.write_bytes(b"a good file")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x04
    bad = tmp_path / "bad.sfbb"
    bad.write_bytes(bytes(flipped))
    cli_exits_2(capsys, ["decompress", run, str(bad), str(good), "--no-progress"], str(bad), "checksum mismatch")
    bad.write_bytes(blob[:-10])
    cli_exits_2(capsys, ["decompress", run, str(bad), str(good), "--no-progress"], "truncated")
    bad.write_bytes(b"not a compressed file at all, but long enough to be framed")
    cli_exits_2(capsys, ["decompress", run, str(bad), str(good), "--no-progress"], "not a scoreflow bits-back file")
    assert good.read_bytes() == b"a good file"  # a failed run never replaces a good file
    # data outside the model's levels: named, nothing written
    np.save(src, np.full((2, 1, 4, 4), LEVELS))
    cli_exits_2(capsys, ["compress", run, str(src), str(tmp_path / "y.sfbb"), "--no-progress"], "`levels` must lie in")
    assert not (tmp_path / "y.sfbb").exists()
