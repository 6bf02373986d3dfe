"""Bits-back lossless compression of the digits test set with trained scoreflow models (issue 11).

For the VDM run (`scoreflow train`) at T in --steps and the D3PM run (`scoreflow train --model d3pm`) at its T,
each in both coding orders: the achieved rate (net stream growth, bits/dim), the exact information content of the
coded symbols (`EncodeStats.ideal_bits`: rate minus ideal is the coder's own overhead), the model's T-step bound on
the same images (one draw per image and step, with its standard error), the initial bits per image, encode and
decode images/s, and an exact round trip. Beside them: PNG, WebP lossless, xz and zstd on the same images.

    python benchmarks/bench_bitsback.py --vdm-run runs/vdm --d3pm-run runs/d3pm

Timings are wall times on the machine as it was (see the load average in the results); compile time is excluded
by a warm-up encode of one batch-shaped chunk first.
"""

import io
import math
import sys
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).parent))
import _common as C  # noqa: E402


def _classic(levels: np.ndarray) -> dict[str, float]:
    import lzma

    from PIL import Image

    n_dims = levels.size
    strip = np.concatenate(list(levels.reshape(levels.shape[0], *levels.shape[-2:])), axis=0).astype(np.uint8)
    out = {}
    buf = io.BytesIO()
    Image.fromarray(strip, mode="L").save(buf, format="PNG", optimize=True)
    out["PNG (one strip)"] = 8.0 * len(buf.getvalue()) / n_dims
    try:
        buf = io.BytesIO()
        Image.fromarray(strip, mode="L").save(buf, format="WEBP", lossless=True, quality=100, method=6)
        out["WebP lossless (one strip)"] = 8.0 * len(buf.getvalue()) / n_dims
    except (OSError, KeyError, ValueError) as e:
        out["WebP lossless (one strip)"] = f"unavailable: {e}"
    raw = levels.astype(np.uint8).tobytes()
    out["xz -9e (raw levels)"] = 8.0 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) / n_dims
    try:
        import zstandard

        out["zstd -22 (raw levels)"] = 8.0 * len(zstandard.ZstdCompressor(level=22).compress(raw)) / n_dims
    except ImportError:
        out["zstd -22 (raw levels)"] = "unavailable: zstandard not installed"
    return out


def _latent_entropies(codec) -> dict:
    """VDM interleaved: what the first step pops before anything comes back, in bits/dim (Gaussian on the grid:
    log2(std / delta) + log2(2 pi e) / 2): z_0 ~ q(z_0 | x) and z_1 ~ q(z_1 | z_0)."""
    st, d, h = codec.steps, codec.delta, 0.5 * math.log2(2 * math.pi * math.e)
    return {
        "h_z0_bpd": math.log2(st.sigma[0] / d[0]) + h,
        "h_z1_bpd": math.log2(st.fwd_std[0] / d[1]) + h,
    }


def _measure(sf, codec, levels, bound_fn, label: dict) -> dict:
    n, dims = levels.shape[0], levels[0].size
    codec.encode(levels[: min(n, codec.batch_size)])  # warm-up: compile for the batch shape
    if n % codec.batch_size:
        codec.encode(levels[-(n % codec.batch_size) :])
    blob, stats = sf.compress_images(codec, levels)
    t = time.perf_counter()
    back = sf.decompress_images(codec, blob)
    dec_s = time.perf_counter() - t
    bounds = bound_fn(levels)
    first = min(n, codec.batch_size)
    rate, ideal = stats.net_bits / (n * dims), stats.ideal_bits / (n * dims)
    b, se = float(np.mean(bounds)), float(np.std(bounds) / math.sqrt(n))
    row = dict(label)
    row.update(
        images=n,
        batch=codec.batch_size,
        rate_bpd=rate,
        ideal_bpd=ideal,
        bound_bpd=b,
        bound_se=se,
        rate_vs_bound_pct=100 * (rate - b) / b,
        overhead_pct=100 * (rate - ideal) / b,
        overhead_bits=stats.net_bits - stats.ideal_bits,
        file_bpd=8.0 * len(blob) / (n * dims),
        initial_bits_per_dim=stats.initial_bits / (first * dims),
        stream_initial_bpd=stats.initial_bits / (n * dims),
        encode_img_s=n / stats.seconds,
        decode_img_s=n / dec_s,
        exact=bool(np.array_equal(back, levels)),
    )
    if label.get("model") == "VDM" and label.get("order") == "interleaved":
        row.update(_latent_entropies(codec))
    print("  " + C.summarise(row), flush=True)
    return row


COLS = [
    ("model", "model", ""),
    ("T", "T", ""),
    ("order", "order", ""),
    ("grid", "grid", ""),
    ("images", "images", ""),
    ("batch", "batch", ""),
    ("rate_bpd", "rate (bits/dim)", ".4f"),
    ("bound_bpd", "bound", ".4f"),
    ("bound_se", "bound s.e.", ".4f"),
    ("rate_vs_bound_pct", "rate vs bound %", "+.3f"),
    ("ideal_bpd", "ideal", ".4f"),
    ("overhead_pct", "coder overhead % of bound", "+.4f"),
    ("overhead_bits", "coder overhead bits (whole stream)", "+.1f"),
    ("file_bpd", "file bits/dim", ".3f"),
    ("initial_bits_per_dim", "initial bits/dim per image of a chunk", ".2f"),
    ("stream_initial_bpd", "stream initial bits per data dim", ".3f"),
    ("encode_img_s", "encode img/s", ".2f"),
    ("decode_img_s", "decode img/s", ".2f"),
    ("exact", "exact", ""),
]


INITIAL_COLS = [
    ("T", "T", ""),
    ("grid", "grid", ""),
    ("images", "images", ""),
    ("initial_bits_per_dim", "initial bits/dim (one image's chain)", ".2f"),
    ("predicted_bpd", "H(z0 given x) + H(z1 given z0)", ".2f"),
    ("h_z0_bpd", "H(z0 given x)", ".2f"),
    ("h_z1_bpd", "H(z1 given z0)", ".2f"),
    ("rate_bpd", "rate (bits/dim)", ".4f"),
    ("ideal_bpd", "ideal", ".4f"),
    ("kl_factor", "coded KL / continuous KL per step", ".5f"),
    ("pop_variance", "forward pops: E[u^2] (1 if clean bits)", ".4f"),
    ("encode_img_s", "encode img/s", ".2f"),
]


def _pop_spread(codec) -> dict:
    """Wrap `codec._pop` to accumulate ((z - mean) / std)^2 over the forward pops z_i ~ q(z_i | z_{i-1}), i >= 1:
    1 (+ 1/(12 R^2) for the bins) if the bits they read were uniformly random. In the interleaved order they read
    the bits just pushed for z_{i-2} under the model's p, which are uniform only where p is right ("dirty bits")."""
    acc = {"sum": 0.0, "count": 0}
    pop = codec._pop

    def wrapped(stack, mean, std, i):
        k = pop(stack, mean, std, i)
        if i >= 1:
            u = (k * codec.delta[i] - np.asarray(mean)) / std
            acc["sum"] += float(np.sum(u * u))
            acc["count"] += u.size
        return k

    codec._pop = wrapped
    return acc


def initial_bits(a, jax, sf, cli, Interrupts, Run) -> None:
    """Interleaved initial bits against the grid: each image's chain alone (batch of one image per chunk would give
    the same; here a batch of `--initial-images` and the dip per image), with the first step's two latent
    entropies that make it up, for `--initial-grids` (R, or R:m for `matched_variance`)."""
    from scipy.special import ndtr

    load_before, t0 = C.load_avg(), time.perf_counter()
    levels = sf.data.load_digits().levels("test").astype(np.int64)[: a.initial_images]
    n, dims = levels.shape[0], levels[0].size
    rows = []

    def kl_factor(R, matched):  # binned / continuous KL of two Gaussians one tenth of a std apart
        s = math.sqrt(R * R - 1 / 12) if matched else R
        e = np.arange(-20 * R, 20 * R + 2) - 0.5
        q, p = np.diff(ndtr(e / s)), np.diff(ndtr((e - 0.1 * R) / s))
        k = (q > 1e-300) & (p > 1e-300)
        return float(np.sum(q[k] * np.log(q[k] / p[k])) / 0.005)

    with Interrupts("bench") as intr:
        for T in [int(v) for v in a.initial_steps.split(",")]:
            for g in a.initial_grids.split(","):
                R, matched = int(g.split(":")[0]), g.endswith(":m")
                codec, _, _ = cli.load_codec(
                    Run(a.vdm_run),
                    intr,
                    steps=T,
                    order="interleaved",
                    batch_size=n,
                    bins_per_std=R,
                    matched_variance=matched,
                )
                codec.encode(levels[:1])  # compile
                codec.encode(levels)  # compile for the batch shape
                spread = _pop_spread(codec)
                words, stats = codec.encode(levels)
                back, _ = codec.decode(words, n)
                row = {"T": T, "grid": f"R={R}" + (" matched" if matched else ""), "images": n}
                row.update(_latent_entropies(codec))
                row.update(
                    initial_bits_per_dim=stats.initial_bits / (n * dims),
                    predicted_bpd=row["h_z0_bpd"] + row["h_z1_bpd"],
                    rate_bpd=stats.net_bits / (n * dims),
                    ideal_bpd=stats.ideal_bits / (n * dims),
                    kl_factor=kl_factor(R, matched),
                    pop_variance=spread["sum"] / max(spread["count"], 1),
                    encode_img_s=n / stats.seconds,
                    exact=bool(np.array_equal(back, levels)),
                )
                print("  " + C.summarise(row), flush=True)
                rows.append(row)
                payload = C.run_record(load_before, t0, rows)
                payload["command"] = "python benchmarks/bench_bitsback.py " + " ".join(sys.argv[1:])
                summary = f"\ncommand: `{payload['command']}`\n"
                title = "Bits-back: interleaved initial bits against the grid"
                report = C.report(title, payload, INITIAL_COLS, summary)
                C.write_results(a.name + "_initial", payload, report)


def main() -> None:
    ap = C.base_parser(__doc__)
    ap.add_argument("--vdm-run", default="runs/bb_vdm")
    ap.add_argument("--d3pm-run", default="runs/bb_d3pm")
    ap.add_argument("--steps", default="10,100,1000", help="VDM step counts T")
    ap.add_argument("--images", type=int, default=297, help="test images (the digits test set has 297)")
    ap.add_argument("--images-large-t", type=int, default=297, help="images at T >= 1000 (fewer under load)")
    ap.add_argument("--batch-size", type=int, default=297)
    ap.add_argument(
        "--amortise",
        default="10:8",
        help="extra VDM interleaved rows T:batch, comma-separated: the same images in chunks of `batch`, each "
        "chunk popping from the ones before (the stream's initial bits are one chunk's)",
    )
    ap.add_argument("--orders", default="interleaved,bbans", help="coding orders, comma-separated")
    ap.add_argument("--no-d3pm", action="store_true", help="skip the D3PM rows")
    ap.add_argument("--bins-per-std", type=int, default=16, help="VDM latent grid R (default 16)")
    ap.add_argument("--matched-variance", action="store_true", help="VDM: VDMCodec(matched_variance=True)")
    ap.add_argument("--name", default="bitsback")
    ap.add_argument("--initial", action="store_true", help="only the initial-bits table (bitsback_initial.md)")
    ap.add_argument("--initial-steps", default="10,100,1000")
    ap.add_argument("--initial-grids", default="16,8:m,4:m,2:m", help="R or R:m (matched variance), comma-separated")
    ap.add_argument("--initial-images", type=int, default=8)
    a = ap.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    import scoreflow as sf
    from scoreflow._cli import compress as cli
    from scoreflow._cli.interrupt import Interrupts
    from scoreflow._cli.run import Run

    if a.initial:
        initial_bits(a, jax, sf, cli, Interrupts, Run)
        return
    load_before, t0 = C.load_avg(), time.perf_counter()
    levels_all = sf.data.load_digits().levels("test").astype(np.int64)
    rows = []
    classic = _classic(levels_all[: a.images])

    def save() -> None:
        payload = C.run_record(load_before, t0, rows)
        payload["classic_bpd"] = classic
        payload["command"] = "python benchmarks/bench_bitsback.py " + " ".join(sys.argv[1:])
        summary = (
            "\nSame images through general-purpose lossless coders (bits/dim, headers included):\n\n"
            + "".join(f"- {k}: {v:.3f}\n" if isinstance(v, float) else f"- {k}: {v}\n" for k, v in classic.items())
            + f"\ncommand: `{payload['command']}`\n"
        )
        report = C.report("Bits-back compression", payload, COLS, summary)
        C.write_results(a.name + ("_quick" if a.quick else ""), payload, report)

    steps = [int(s) for s in a.steps.split(",")] if not a.quick else [10]
    extra = [tuple(int(v) for v in j.split(":")) for j in a.amortise.split(",") if j] if not a.quick else []
    orders = a.orders.split(",")
    jobs = [("vdm", T, o, None) for T in steps[:1] for o in orders]
    jobs += [("d3pm", 0, o, None) for o in orders if not a.no_d3pm]
    jobs += [("vdm", T, "interleaved", b) for T, b in extra if T < 1000]
    jobs += [("vdm", T, o, None) for T in steps[1:] for o in orders]  # cheapest first
    jobs += [("vdm", T, "interleaved", b) for T, b in extra if T >= 1000]
    bounds_done: dict = {}  # one bound evaluation per (model, T, images), shared by the rows
    with Interrupts("bench") as intr:
        for kind, T, order, batch in jobs:
            if kind == "vdm":
                n = 16 if a.quick else (a.images if T < 1000 else a.images_large_t)
                codec, _, what = cli.load_codec(
                    Run(a.vdm_run),
                    intr,
                    steps=T,
                    order=order,
                    batch_size=min(batch or a.batch_size, n),
                    bins_per_std=a.bins_per_std,
                    matched_variance=a.matched_variance,
                )
                per = max(1, 2048 // T)

                def bound(levels, codec=codec, T=T, per=per):
                    x = 2.0 * levels / (codec.num_levels - 1) - 1.0
                    f = jax.jit(
                        jax.vmap(
                            lambda xi, k: (
                                sf.discrete_vdm_vlb(
                                    codec.model, xi, num_steps=T, key=k, num_levels=codec.num_levels
                                ).terms.total
                            )
                        )
                    )
                    return np.concatenate(
                        [
                            np.asarray(
                                f(
                                    jax.numpy.asarray(x[i : i + per]),
                                    jax.random.split(jax.random.key(i), len(x[i : i + per])),
                                )
                            )
                            for i in range(0, len(x), per)
                        ]
                    )

                grid = f"R={a.bins_per_std}" + (" matched" if a.matched_variance else "")
                label = {"model": "VDM", "T": T, "order": order, "grid": grid}
            else:
                n = 16 if a.quick else a.images
                codec, _, what = cli.load_codec(
                    Run(a.d3pm_run), intr, steps=0, order=order, batch_size=min(a.batch_size, n)
                )

                def bound(levels, codec=codec):
                    f = jax.jit(jax.vmap(lambda x, k: sf.d3pm_bound_bpd(codec.model, codec.transition, x, key=k)))
                    return np.asarray(f(jax.numpy.asarray(levels), jax.random.split(jax.random.key(0), len(levels))))

                label = {"model": "D3PM absorbing", "T": codec.num_steps, "order": order, "grid": "-"}
            print(f"{what} {order} on {n} images, batch {codec.batch_size}", flush=True)

            def shared(levels, bound=bound, key=(kind, T, n)):
                if key not in bounds_done:
                    bounds_done[key] = bound(levels)
                return bounds_done[key]

            rows.append(_measure(sf, codec, levels_all[:n], shared, label))
            save()


if __name__ == "__main__":
    main()
