"""`scoreflow compress RUN INPUT OUTPUT` and `scoreflow decompress RUN INPUT OUTPUT`: lossless bits-back coding of
images with a trained run's EMA model (VDM / continuous VP runs, and D3PM runs on images).

INPUT is a `.npy`, a `.npz` (one array) or a folder of PNGs, holding integer images on the model's levels (PNG
values are taken as levels if below the level count, else as 8-bit values of levels spaced by 255/(L-1)). The file
records how to write the data back. Writes are atomic: a temporary file next to OUTPUT, renamed over it only when
complete, so a failed or interrupted run never leaves a half file over a good one.
"""

import argparse
import math
import os
import tempfile
import time

import numpy as np

from . import registry
from .options import UsageError, nonneg_int, positive_int
from .progress import phase
from .run import Run, family_name


DEFAULT_STEPS = 100


def add_parser(sub) -> None:
    if "compress" in sub.choices:  # one module serves both commands (listed twice in COMMANDS)
        return
    c = sub.add_parser(
        "compress",
        help="losslessly compress images with a trained run (bits-back coding)",
        description="Bits-back ANS coding of integer images with RUN's EMA model: VDM runs use T discrete steps "
        "(--steps), D3PM runs their own T. Prints the achieved bits/dim next to the model's T-step bound.",
    )
    c.add_argument("run", help="run folder written by `scoreflow train` (a VP/VDM or a D3PM image run)")
    c.add_argument("input", help=".npy, .npz (one array) or a folder of PNGs, shape (n, *image) on the model's levels")
    c.add_argument("output", help="the compressed file to write (replaced atomically if it exists)")
    c.add_argument(
        "--steps",
        type=positive_int,
        default=DEFAULT_STEPS,
        help="discrete steps T of a continuous (VDM) model (default: %(default)s; D3PM: the run's T)",
    )
    c.add_argument(
        "--order",
        choices=("interleaved", "bbans"),
        default="interleaved",
        help="interleaved: O(1) initial bits (default); bbans: the BB-ANS reference order, O(T)",
    )
    c.add_argument("--batch-size", type=positive_int, default=128, help="images per model call (default: 128)")
    c.add_argument(
        "--bins-per-std",
        type=positive_int,
        default=16,
        help="VDM latent grid: bins per standard deviation of the finest step (default: %(default)s; >= 2)",
    )
    c.add_argument(
        "--matched-variance",
        action="store_true",
        help="VDM: code each Gaussian with std sqrt(sigma^2 - delta^2/12) so the binned one keeps sigma^2; makes a "
        "coarse grid (e.g. --bins-per-std 4) exact and the initial bits smaller",
    )
    c.add_argument("--seed", type=nonneg_int, default=0, help="seed of the stream's initial words (default: 0)")
    c.add_argument("--check", action="store_true", help="decode what was written and compare the data's SHA-256")
    c.add_argument("--no-bound", action="store_true", help="skip evaluating the model's bound on the images")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    d = sub.add_parser(
        "decompress",
        help="decompress a file written by `scoreflow compress`",
        description="Decode INPUT (written by `scoreflow compress` with RUN) to OUTPUT in the format it came from; "
        "refuses another model, other settings, other jax/jaxlib/platform and corrupted or truncated files.",
    )
    d.add_argument("run", help="the run folder the file was compressed with")
    d.add_argument("input", help="the compressed file")
    d.add_argument("output", help=".npy/.npz file or PNG folder to write (as the original was)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")


# --- data in and out ---------------------------------------------------------------------------------------------
def read_images(path: str, num_levels: int) -> tuple[np.ndarray, dict]:
    """(integer levels of shape (n, ...), how to write them back)."""
    if os.path.isdir(path):
        from PIL import Image

        names = sorted(f for f in os.listdir(path) if f.lower().endswith(".png"))
        if not names:
            raise UsageError(f"INPUT {path!r}: a folder without .png files")
        arrays = []
        for n in names:
            with Image.open(os.path.join(path, n)) as im:
                if im.mode not in ("L", "I;16", "I"):
                    raise UsageError(f"INPUT {path!r}: {n} is a {im.mode} image; expected greyscale (mode L)")
                arrays.append(np.asarray(im).astype(np.int64))
        if len({a.shape for a in arrays}) != 1:
            raise UsageError(f"INPUT {path!r}: the PNGs have different sizes")
        k = np.stack(arrays)[:, None]
        step = 255 // (num_levels - 1) if 255 % (num_levels - 1) == 0 else None
        if k.max() >= num_levels and step is not None and np.all(k % step == 0):
            return k // step, {"format": "png", "names": names, "scale": step}
        return k, {"format": "png", "names": names, "scale": 1}
    if path.endswith(".npz"):
        with np.load(path) as z:
            if len(z.files) != 1:
                raise UsageError(f"INPUT {path!r}: a .npz with {len(z.files)} arrays; expected exactly one")
            key = z.files[0]
            a = z[key]
        return a, {"format": "npz", "key": key, "dtype": a.dtype.str}
    if path.endswith(".npy"):
        a = np.load(path)
        return a, {"format": "npy", "dtype": a.dtype.str}
    raise UsageError(f"INPUT {path!r}: not a .npy, a .npz or a folder of PNGs")


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".partial", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_images(path: str, levels: np.ndarray, how: dict) -> None:
    fmt = how["format"]
    if fmt == "png":
        from PIL import Image

        os.makedirs(path, exist_ok=True)
        for name, img in zip(how["names"], levels, strict=True):
            a = (img.reshape(img.shape[-2:]) * how["scale"]).astype(np.uint8)
            _atomic(os.path.join(path, name), lambda t, a=a: Image.fromarray(a, mode="L").save(t, format="PNG"))
    elif fmt == "npz":
        a = levels.astype(np.dtype(how["dtype"]))
        _atomic(path, lambda t: np.savez(open(t, "wb"), **{how["key"]: a}))
    else:
        a = levels.astype(np.dtype(how["dtype"]))
        _atomic(path, lambda t: np.save(open(t, "wb"), a))


# --- the run's model as a codec ----------------------------------------------------------------------------------
def load_codec(
    run: Run,
    interrupts,
    *,
    steps: int,
    order: str,
    batch_size: int,
    bins_per_std: int = 16,
    matched_variance: bool = False,
):
    """(codec, a function giving the model's bound in bits/dim on levels, a short description)."""
    import jax

    # the run is restored in its training precision (float32 checkpoints), then the codec casts it to float64
    jax.config.update("jax_enable_x64", False)
    import scoreflow as sf

    from . import continuous as _continuous, d3pm as _d3pm  # noqa: F401 - registers the model families

    family = registry.get(family_name(run.read_config()))
    orders = {"interleaved": sf.Interleaved(), "bbans": sf.BBANS()}
    if family.name == "d3pm":
        from .d3pm import load_run

        _, c, ds, transition, state = load_run(run)
        jax.config.update("jax_enable_x64", True)
        model = state.ema if state.ema is not None else state.model
        if len(ds.shape) != 3:
            raise UsageError(f"RUN {run.path!r}: a D3PM run on {ds.shape} data; compress handles images only")
        codec = sf.D3PMCodec(
            model, transition, data_shape=ds.shape, num_levels=ds.num_levels, order=orders[order], batch_size=batch_size
        )

        def bound(levels):
            f = jax.jit(jax.vmap(lambda x, k: sf.d3pm_bound_bpd(codec.model, codec.transition, x, key=k)))
            out = [
                f(
                    jax.numpy.asarray(levels[i : i + batch_size]),
                    jax.random.split(jax.random.key(i), len(levels[i : i + batch_size])),
                )
                for i in range(0, len(levels), batch_size)
            ]
            return float(np.mean(np.concatenate([np.asarray(o) for o in out])))

        return codec, bound, f"D3PM {c['transition']}, T={transition.num_steps}"
    from .continuous import CONTINUOUS

    c, ds, state = CONTINUOUS._load(run, interrupts)
    jax.config.update("jax_enable_x64", True)
    model = state.ema if state.ema is not None else state.model
    if ds.num_levels is None or c.get("sde") != "vp":
        raise UsageError(f"RUN {run.path!r}: compress needs a VP model trained on discrete data (levels)")
    codec = sf.VDMCodec(
        model,
        data_shape=ds.shape,
        num_levels=ds.num_levels,
        num_steps=steps,
        order=orders[order],
        bins_per_std=bins_per_std,
        matched_variance=matched_variance,
        batch_size=batch_size,
    )
    per = max(1, 2048 // steps)

    def bound(levels):
        x = 2.0 * levels / (ds.num_levels - 1) - 1.0
        f = jax.jit(
            jax.vmap(
                lambda xi, k: (
                    sf.discrete_vdm_vlb(codec.model, xi, num_steps=steps, key=k, num_levels=ds.num_levels).terms.total
                )
            )
        )
        out = [
            np.asarray(f(jax.numpy.asarray(x[i : i + per]), jax.random.split(jax.random.key(i), len(x[i : i + per]))))
            for i in range(0, len(x), per)
        ]
        return float(np.mean(np.concatenate(out)))

    return codec, bound, f"VDM, T={steps}"


def run(a: argparse.Namespace, interrupts) -> int:
    import scoreflow as sf

    folder = Run(a.run)
    if a.command == "decompress":
        with open(a.input, "rb") as f:
            blob = f.read()
        try:
            header = sf.read_compressed_header(blob)
        except sf.BitsBackError as e:
            raise UsageError(f"INPUT {a.input!r}: {e}") from None
        ch = header["codec"]
        with phase("loading the model", interrupts=interrupts):
            grid = {k: ch[k] for k in ("bins_per_std", "matched_variance") if k in ch}
            codec, _, what = load_codec(
                folder, interrupts, steps=ch["num_steps"], order=ch["order"], batch_size=ch["batch_size"], **grid
            )
        with phase(
            f"decoding {header['count']} images ({what}, {ch['order']})",
            total=header["count"],
            unit="images",
            interrupts=interrupts,
            bar=not a.no_progress,
        ) as adv:
            try:
                levels = sf.decompress_images(codec, blob, progress=adv)
            except sf.BitsBackError as e:
                raise UsageError(f"INPUT {a.input!r}: {type(e).__name__}: {e}") from None
        write_images(a.output, levels, header["source"])
        print(f"wrote {a.output}: {len(levels)} images, SHA-256 verified")
        return 0

    with phase("loading the model", interrupts=interrupts):
        if a.bins_per_std < 2:
            raise UsageError(f"--bins-per-std {a.bins_per_std}: must be >= 2")
        codec, bound, what = load_codec(
            folder,
            interrupts,
            steps=a.steps,
            order=a.order,
            batch_size=a.batch_size,
            bins_per_std=a.bins_per_std,
            matched_variance=a.matched_variance,
        )
    levels, how = read_images(a.input, codec.num_levels)
    if levels.ndim == len(codec.data_shape):
        levels = levels[:, None] if len(codec.data_shape) == 3 and levels.ndim == 3 else levels
    try:
        levels = codec.check_levels(levels)
    except (ValueError, TypeError) as e:
        raise UsageError(f"INPUT {a.input!r}: {e}") from None
    n, dims = levels.shape[0], math.prod(codec.data_shape)
    t = time.time()
    with phase(
        f"encoding {n} images ({what}, {a.order})", total=n, unit="images", interrupts=interrupts, bar=not a.no_progress
    ) as adv:
        blob, stats = sf.compress_images(codec, levels, seed=a.seed, progress=adv, source=how)
    seconds = time.time() - t
    _atomic(a.output, lambda tmp: open(tmp, "wb").write(blob))
    if a.check:
        with phase(
            "checking: decoding what was written", total=n, unit="images", interrupts=interrupts, bar=not a.no_progress
        ) as adv:
            with open(a.output, "rb") as f:
                back = sf.decompress_images(codec, f.read(), progress=adv)
            if not np.array_equal(back, levels):
                raise UsageError("--check: the decoded images differ from the input")
    rate = stats.net_bits / (n * dims)
    line = (
        f"wrote {a.output}: {n} images, {len(blob)} bytes ({8 * len(blob) / (n * dims):.4f} bits/dim in the "
        f"file); rate {rate:.4f} bits/dim, initial bits {stats.initial_bits / (min(n, codec.batch_size) * dims):.2f}"
        f" per dim; {n / seconds:.1f} images/s"
    )
    if not a.no_bound:
        with phase("evaluating the model's bound on these images", interrupts=interrupts):
            b = bound(levels)
        line += f"; the model's {what} bound: {b:.4f} bits/dim ({100 * (rate - b) / b:+.2f}%)"
    if a.check:
        line += "; --check: decoded and SHA-256 verified"
    print(line)
    return 0
