"""Class-conditional digits: class accuracy and Fréchet distance vs guidance weight, for classifier-free guidance
(constant and in a noise-level interval) and autoguidance by a smaller, shorter-trained model of the same kind.

One class-conditional U-Net is trained with the config, objective (label dropout 0.1, denoising score matching,
cosine schedule) and loop of `scoreflow train --data digits --cond class` (without the run folder's evaluations).
The autoguidance guides follow Karras et al. (2024, EDM2): a smaller network of the same family trained with the
same objective and data for a fraction of the main model's steps (its own learning-rate schedule and EMA), so that
it is a decent model with the same kind of errors, only more of them; by default a U-Net with half the channels
(16,32) trained for half and for all of the main model's steps. For each method and weight g in (0, 1, 2, 4),
`--num-samples` samples (classes 0..9 in turn) are drawn with DPM-Solver++ from the same prior draws and scored by
`scoreflow.metrics`: class accuracy of the locally trained digit classifier (98.3% on the test digits) and the
Fréchet distance between Gaussian fits of its 64 penultimate features for the samples and the 297 test digits
(lower is better; the floor row scores real training digits the same way). Wall times are recorded.

    python benchmarks/bench_guidance_digits.py            # full (about 25 min on 2 busy cores)
    python benchmarks/bench_guidance_digits.py --quick    # smoke run
"""

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


C.set_threads()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402
import scoreflow.data as sfd  # noqa: E402
import scoreflow.metrics as sfm  # noqa: E402
import scoreflow.train as sft  # noqa: E402
from scoreflow._cli import continuous  # noqa: E402


WEIGHTS = (0.0, 1.0, 2.0, 4.0)
INTERVAL = (0.3, 5.0)  # sigma/alpha; the cosine schedule spans [exp(-4), exp(2.5)] = [0.018, 12.2]
PLOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "guidance_digits.png"


def main():
    ap = C.base_parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="training steps")
    ap.add_argument(
        "--guides", default=None,
        help="autoguidance guides as CHANNELS@STEPS separated by ';', e.g. '16,32@300;16,32@600' (the default: half "
        "the main model's channels, trained for half and for all of its steps)",
    )  # fmt: skip
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--sample-steps", type=int, default=None)
    a = ap.parse_args()
    t_start, load_before = time.perf_counter(), C.load_avg()
    steps = a.steps or (20 if a.quick else 600)
    guides = _parse_guides(a.guides or (f"16,32@{steps // 2};16,32@{steps}"))
    n = a.num_samples or (40 if a.quick else 300)
    sample_steps = a.sample_steps or (4 if a.quick else 25)
    ds = sfd.load_digits()
    # the config `scoreflow train` builds for these options; trained here with the same objective and loop, without
    # the run folder's evaluations
    cli = (
        f"scoreflow train --data digits --cond class --loss dsm --schedule cosine --channels 32,64 --steps {steps} "
        f"--batch-size 64 --sampler dpm-solver --sample-steps {sample_steps}"
    )
    c = dict(
        continuous.DEFAULTS, data="digits", cond="class", num_classes=ds.num_classes, loss="dsm", schedule="cosine",
        channels=[32, 64], steps=steps, batch_size=64, sampler="dpm-solver", sample_steps=sample_steps,
    )  # fmt: skip
    data = (ds.train, ds.train_labels.astype(np.int32))
    loop = dict(seed=c["seed"], progress=False, log_every=50)

    def train(cfg):
        state, optimiser = continuous.build_state(cfg, ds.shape)
        objective = continuous.build_objective(cfg, ds.num_levels)
        step_fn = sft.make_train_step(objective, optimiser, ema_decay=cfg["ema_decay"])
        t = time.perf_counter()
        state = sft.train_loop(state, step_fn, data, num_steps=cfg["steps"], batch_size=cfg["batch_size"], **loop)
        return jax.block_until_ready(state.ema), time.perf_counter() - t

    model, train_s = train(c)
    print(f"trained {steps} steps in {train_s:.0f} s", flush=True)
    weak = {}
    for ch, st in guides:
        weak[(ch, st)] = train(dict(c, channels=list(ch), steps=st))
        print(f"guide channels {ch} trained {st} steps in {weak[(ch, st)][1]:.0f} s", flush=True)

    k = c["num_classes"]
    labels = jnp.asarray(np.arange(n, dtype=np.int32) % k)
    t = time.perf_counter()
    clf = sfm.digit_classifier()
    clf_s = time.perf_counter() - t
    test_acc = sfm.class_accuracy(clf, ds.test, ds.test_labels)
    sampler = continuous.TABLE["sampler"][c["sampler"]](sample_steps)
    # one compilation per kind of wrapper: the weight g is an array argument (`Constant(jnp.asarray(g))`)
    draw = eqx.filter_jit(lambda m, key, cc: sf.sample(m, m.sde, key, (n, *ds.shape), sampler=sampler, cond=cc).samples)

    rows = []
    rng = np.random.default_rng(0)
    real = ds.train[rng.choice(len(ds.train), size=min(n, len(ds.train)), replace=False)]
    rows.append({"method": "train digits (floor)", "g": float("nan"), "class_acc": float("nan"),
                 "frechet": sfm.frechet_feature_distance(clf, real, ds.test), "sample_s": 0.0})  # fmt: skip

    def score(method, g, sm):
        t = time.perf_counter()
        x = np.asarray(draw(sm, jax.random.key(1), labels))
        dt = time.perf_counter() - t
        x = np.clip(x, -1, 1).astype(np.float32)
        r = {
            "method": method,
            "g": g,
            "class_acc": sfm.class_accuracy(clf, x, np.asarray(labels)),
            "frechet": sfm.frechet_feature_distance(clf, x, ds.test),
            "sample_s": dt,
        }
        print("  " + C.summarise(r), flush=True)
        rows.append(r)
        return x

    def w(g):
        return jnp.asarray(g, jnp.float32)

    grids = {}
    grids[("cfg", 1.0)] = score("CFG", 1.0, model)
    for g in WEIGHTS:
        if g != 1:
            grids[("cfg", g)] = score("CFG", g, sf.ClassifierFreeGuidance(model, None, k, sf.Constant(w(g))))
    for g in WEIGHTS:
        if g != 1:
            score(f"CFG interval [{INTERVAL[0]:g}, {INTERVAL[1]:g}]", g,
                  sf.ClassifierFreeGuidance(model, None, k, sf.Interval(*INTERVAL, w(g))))  # fmt: skip
    for ch, st in guides:
        name = _guide_name(ch, st)
        for g in WEIGHTS:
            if g != 1:
                grids[("auto", ch, st, g)] = score(
                    f"autoguidance ({name})", g, sf.Guided(model, weak[(ch, st)][0], sf.Constant(w(g)))
                )

    payload = C.run_record(load_before, t_start, rows)
    payload.update(
        train_steps=steps, num_samples=n,
        guides=[{"channels": list(ch), "steps": st, "train_s": weak[(ch, st)][1]} for ch, st in guides],
        sampler=f"dpm-solver {sample_steps} steps", interval=list(INTERVAL), train_s=train_s, classifier_s=clf_s,
        classifier_test_acc=test_acc, config=cli, quick=a.quick,
    )  # fmt: skip
    cols = [("method", "method", ""), ("g", "g", "g"), ("class_acc", "class accuracy", ".3f"),
            ("frechet", "Fréchet distance", ".1f"), ("sample_s", "sampling s (compile incl.)", ".1f")]  # fmt: skip
    summary = (
        f"\n{n} samples per row (classes 0..9 in turn, the same prior draws), DPM-Solver++ {sample_steps} steps; "
        f"model: the U-Net (channels 32,64) of `{cli}`, trained {steps} steps (batch 64, label dropout 0.1) in "
        f"{train_s:.0f} s on a shared 2-core machine; autoguidance guides: "
        + "; ".join(f"{_guide_name(ch, st)} ({weak[(ch, st)][1]:.0f} s)" for ch, st in guides)
        + f", same objective, data, seed and loop, each with its own learning-rate schedule and EMA (decay "
        f"{c['ema_decay']}); autoguidance at g = 0 is the guide alone; interval in sigma/alpha; "
        f"classifier test accuracy {test_acc:.3f}. Fréchet distance to the {len(ds.test)} test digits on the "
        f"classifier's 64 features; the floor row is {n} real training digits. Sampling times include one "
        f"compilation per kind of wrapper (the first row of each). Reproduce: "
        f"`python benchmarks/bench_guidance_digits.py`. Plot: docs/img/guidance_digits.png.\n"
    )
    name = "guidance_digits_quick" if a.quick else "guidance_digits"
    C.write_results(name, payload, C.report("Guidance on class-conditional digits", payload, cols, summary))
    _plot(rows, grids, guides, C.RESULTS / "guidance_digits_quick.png" if a.quick else PLOT)


def _guide_name(ch, st):
    return f"U-Net {','.join(map(str, ch))}, {st} steps"


def _parse_guides(spec):
    out = []
    for part in spec.split(";"):
        try:
            ch, st = part.split("@")
            out.append((tuple(int(v) for v in ch.split(",")), int(st)))
        except ValueError as e:
            msg = f"--guides {spec!r}: expected CHANNELS@STEPS[;CHANNELS@STEPS...], e.g. '16,32@300'"
            raise SystemExit(msg) from e
    return out


def _plot(rows, grids, guides, path):
    from scoreflow import plots

    plt = plots._pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1.2, 1]})
    names = ["CFG interval", "CFG"] + [f"autoguidance ({_guide_name(ch, st)})" for ch, st in guides]
    for prefix, marker in zip(names, ("s", "o", "^", "v", "D", "P"), strict=False):
        pts = [r for r in rows if r["method"].startswith(prefix) and (prefix != "CFG" or "interval" not in r["method"])]
        if prefix != "CFG":  # g = 1 is the same unguided model for every method
            pts = [r for r in rows if r["method"] == "CFG" and r["g"] == 1.0] + pts
        pts = sorted(pts, key=lambda r: r["g"])
        ax.plot([r["frechet"] for r in pts], [r["class_acc"] for r in pts], marker=marker, label=pts[-1]["method"])
        for r in pts:
            ax.annotate(f"g={r['g']:g}", (r["frechet"], r["class_acc"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    floor = [r for r in rows if "floor" in r["method"]][0]["frechet"]
    ax.axvline(floor, color="grey", ls=":", label="real train digits vs test")
    ax.set_xlabel("Fréchet distance to test digits (classifier features; lower is better)")
    ax.set_ylabel("class accuracy")
    ax.legend(fontsize=8)
    ax.set_title("class-conditional digits: guidance trade-off")
    ch, st = guides[-1]
    show = [grids[("cfg", 1.0)][:20], grids[("cfg", 4.0)][:20], grids[("auto", ch, st, 4.0)][:20]]
    grid = plots.image_grid(np.concatenate(show), ncols=10)
    ax2.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax2.set_title(f"rows: g=1 (no guidance) | CFG g=4 | autoguidance g=4 ({_guide_name(ch, st)} guide)", fontsize=8)
    ax2.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
