"""`--model d3pm`: discrete diffusion (D3PM; Austin et al., 2021) on quantised images or text.

The data's integer levels (grey levels, or characters of the text8 alphabet) are the states. Images get an
x0-predicting U-Net on one-hot planes (`ImageX0Net`), sequences a bidirectional transformer. Training minimises
the hybrid loss $L_{vb} + \\lambda\\, \\mathrm{CE}$ (bits/dim); the reported number is the exact bound
`d3pm_bound_bpd` (all T terms, one draw of x_t per term) averaged over the first `--eval-examples` test
examples after training (and at step 0 with `--initial-bound`), next to the per-pixel (per-position)
categorical baseline.

Defaults: the absorbing transition with T = 50, the best of the transitions measured on the digits
(benchmarks/results/d3pm.md: absorbing 1.803, uniform 1.925, Gaussian 2.009 bits/dim after 2000 steps).

Randomness, so that the reported bound can be recomputed: example i of the evaluated test subset uses the key
`fold_in(fold_in(key(seed), 3), i)`, the same at step 0 and at the end (common random numbers); the samples
use `split(fold_in(key(seed), 4), num_samples)`.
"""

import argparse
import math
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoreflow as sf

from .. import data as sfd, train as sft
from . import registry
from .datasets import load_data, warn_if_small
from .options import COMMON, Option, UsageError, check_unet_levels, nonneg_float, positive_int
from .progress import phase
from .run import Run, count_params, output_stem
from .table import TABLE, unet_groups


TRAIN_OPTIONS = (
    Option(
        "transition",
        "absorbing",
        "forward transition: absorbing [MASK] (mutual-information schedule), uniform (cosine) or discretised "
        "Gaussian (ordinal levels only; linear betas 0.02..1); absorbing measured best on the digits",
        choices=tuple(sorted(TABLE["transition"])),
    ),
    Option("timesteps", 50, "number of diffusion steps T", positive_int),
    Option(
        "hybrid_coeff",
        None,
        "weight of the auxiliary cross-entropy in the hybrid loss, with the whole bound weighted 1; "
        "0 trains on the bound alone",
        nonneg_float,
        default_text="0.001 * T, D3PM's 0.001 on a single-step term",
    ),
    Option(
        "eval_examples",
        1000,
        "first test examples on which the exact bound (all T terms) is reported",
        positive_int,
    ),
    Option("seq_len", 64, "characters per sequence of --data text / text8:PATH", positive_int),
    Option(
        "initial_bound",
        False,
        "also evaluate the exact bound at step 0 (as expensive as the final one: all T terms on --eval-examples)",
        switch=True,
    ),
)
_D3PM = {o.key: o for o in TRAIN_OPTIONS}
# Options of `train` shared with the other families that D3PM runs use.
SHARED = (
    "data",
    "bits",
    "channels",
    "res_blocks",
    "attention",
    "dropout",
    "width",
    "depth",
    "steps",
    "batch_size",
    "accumulate",
    "lr",
    "warmup",
    "clip",
    "ema_decay",
    "seed",
    "log_every",
    "checkpoint_every",
    "keep",
    "num_samples",
)
_COMMON = {o.key: o for o in COMMON}
_EVAL_CHUNK = 256


def _resolve(c: dict, ds: sfd.Dataset) -> None:
    """Checks that need the data, and the data-dependent defaults (written into `c`)."""
    if ds.num_levels is None:
        raise UsageError(
            f"--model d3pm needs discrete data (grey levels or characters); --data {c['data']} is continuous"
        )
    text = ds.alphabet is not None
    if c["transition"] == "gaussian" and text:
        raise UsageError(
            f"--transition gaussian needs ordinal data (grey levels); --data {c['data']} is characters, which "
            "have no order: use --transition uniform or absorbing"
        )
    if c["hybrid_coeff"] is None:
        c["hybrid_coeff"] = 0.001 * c["timesteps"]
    shape = ds.shape
    if len(shape) == 3:
        if shape[1] != shape[2]:
            raise UsageError(
                f"--model d3pm needs square images; --data {c['data']} has examples of shape {shape}: crop or pad "
                "them to square"
            )
        check_unet_levels(c, shape[-1])
    elif len(shape) == 1:
        if c["width"] % 8:
            raise UsageError(f"--width {c['width']}: the transformer (4 heads) needs a multiple of 8")
    else:
        raise UsageError(
            f"--model d3pm needs images (C, H, W) or sequences (L,); --data {c['data']} has examples of shape {shape}"
        )
    n_dev = jax.device_count()
    if c["batch_size"] % n_dev:
        raise UsageError(f"--batch-size {c['batch_size']}: must be divisible by the number of devices ({n_dev})")


def build_transition(c: dict, num_levels: int) -> sf.AbstractTransition:
    return TABLE["transition"][c["transition"]](num_levels, c["timesteps"])


def build_model(c: dict, shape: tuple[int, ...], num_states: int) -> eqx.Module:
    """The x0-network: `ImageX0Net(UNet)` for images (C, H, W), `SequenceTransformer` for sequences (L,)."""
    k_net = jax.random.split(jax.random.key(c["seed"]))[0]
    if len(shape) == 3:
        planes = shape[0] * num_states
        unet = sf.UNet(
            shape[-1],
            planes,
            planes,
            channels=tuple(c["channels"]),
            num_res_blocks=c["res_blocks"],
            attention_resolutions=tuple(c["attention"]),
            dropout=c["dropout"],
            groups=unet_groups(c["channels"]),
            key=k_net,
        )
        return sf.ImageX0Net(unet, num_states)
    return sf.SequenceTransformer(num_states, shape[0], dim=c["width"], depth=c["depth"], key=k_net)


def build_state(c: dict, ds: sfd.Dataset, transition: sf.AbstractTransition):
    model = build_model(c, ds.shape, transition.num_states)
    optimiser = sft.make_optimiser(
        c["lr"], total_steps=c["steps"], warmup_steps=min(c["warmup"], c["steps"]), clip_norm=c["clip"]
    )
    state = sft.init_state(model, optimiser, key=jax.random.fold_in(jax.random.key(c["seed"]), 1))
    return state, optimiser


def build_objective(transition: sf.AbstractTransition, coeff: float):
    """Batch mean of the hybrid loss (bits/dim), one key per example."""

    def hybrid(model, x, key):
        keys = jax.random.split(key, x.shape[0])
        per_example = jax.vmap(lambda xi, ki: sf.d3pm_hybrid_loss(model, transition, xi, key=ki, coeff=coeff))
        return jnp.mean(per_example(x, keys)), {}

    return hybrid


def eval_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 3)


@eqx.filter_jit
def _bound_chunk(model, transition, x, keys):
    return jax.vmap(lambda xi, ki: sf.d3pm_bound_bpd(model, transition, xi, key=ki))(x, keys)


def test_bound(
    model, transition: sf.AbstractTransition, levels: np.ndarray, key: jax.Array, advance=lambda n: None
) -> np.ndarray:
    """`d3pm_bound_bpd` of each example of `levels` (bits/dim), example i with key `fold_in(key, i)`; evaluated in
    chunks of at most 256 (the last padded, so one compilation), calling `advance(k)` as k more are done."""
    n = len(levels)
    chunk = min(n, _EVAL_CHUNK)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    out = []
    for s in range(0, n, chunk):
        idx = np.minimum(np.arange(s, s + chunk), n - 1)
        out.append(np.asarray(_bound_chunk(model, transition, jnp.asarray(levels[idx]), keys[idx]))[: n - s])
        advance(min(chunk, n - s))
    return np.concatenate(out)


def sample_key(seed: int) -> jax.Array:
    """The key of the samples of a run trained with `--seed seed` (split into one key per sample)."""
    return jax.random.fold_in(jax.random.key(seed), 4)


@eqx.filter_jit
def _sample_batch(model, transition, shape, keys):
    return jax.vmap(lambda k: sf.d3pm_sample(model, transition, shape, key=k))(keys)


def draw_samples(model, transition: sf.AbstractTransition, shape: tuple[int, ...], n: int, key: jax.Array):
    """`n` ancestral samples (integer states), shape `(n, *shape)`."""
    return np.asarray(_sample_batch(model, transition, tuple(shape), jax.random.split(key, n)))


def write_samples(path_stem: str, samples: np.ndarray, ds: sfd.Dataset, title: str) -> str:
    """Samples as text lines (`.txt`, character data) or a PNG grid (images), plus the integer states (`.npy`)."""
    np.save(path_stem + ".npy", samples)
    if ds.alphabet is not None:
        path = path_stem + ".txt"
        with open(path, "w") as f:
            f.writelines("".join(ds.alphabet[i] for i in row) + "\n" for row in samples.reshape(len(samples), -1))
        return path
    from .. import plots

    path = path_stem + ".png"
    shown = 2.0 * samples.astype(np.float64) / (ds.num_levels - 1) - 1.0
    if shown.ndim == 4:
        plots.save_samples(path, np.clip(shown, -1.0, 1.0), title=title)
    else:
        plots.save_samples(path, shown, title=title)
    return path


def _eval_levels(c: dict, ds: sfd.Dataset) -> np.ndarray:
    return ds.levels("test")[: c["eval_examples"]].astype(np.int32)


def summary(first_line: str, c: dict, ds: sfd.Dataset, r: dict) -> str:
    unit = "bits/char" if ds.alphabet is not None else "bits/dim"
    what = "per-position categorical (add-one)" if ds.alphabet is not None else "per-pixel categorical (add-one)"
    stderr = r["test_bound_bpd_stderr_over_examples"]
    pm = "no standard error" if stderr is None else f"+- {stderr:.3f}"
    initial = r.get("initial_test_bound_bpd")
    at_0 = "" if initial is None else f"; {initial:.4f} at step 0"
    lines = [
        first_line,
        f"  test bound (D3PM {c['transition']}, T={c['timesteps']}, EMA) {r['test_bound_bpd']:.4f} {unit}  "
        f"({pm}, {r['eval_examples']} test examples{at_0})",
    ]
    for name, v in r["baselines_bpd"].items():
        label = what if name == "categorical" else f"{name} compressor"
        lines.append(f"  baseline: {label:<38}{v:.4f} {unit}")
    return "\n".join(lines)


def load_run(run: str | Run):
    """(config.json contents, config, dataset, transition, restored train state) of a D3PM run folder."""
    run = Run(run) if isinstance(run, str) else run
    cfg = run.read_config()
    c = cfg["config"]
    ds = load_data(c)
    transition = build_transition(c, ds.num_levels)
    state, _ = build_state(c, ds, transition)
    state, _ = run.restore(state, D3PM_FAMILY, c)
    # placed as during training, so sampling reuses a compilation made by `train` in the same process
    return cfg, c, ds, transition, sft.replicate(state, sft.make_mesh())


# ---------------------------------------------------------------------------------------------------------------
class D3PM(registry.AbstractFamily):
    name = "d3pm"
    title = "D3PM"
    help = "discrete diffusion on the data's levels or characters (--transition, --timesteps, ...)"
    train_options = TRAIN_OPTIONS
    model_keys = (
        "model data bits seq_len channels res_blocks attention dropout width depth transition timesteps".split()
    )

    def config_keys(self) -> tuple[str, ...]:
        return (*SHARED, "model", *_D3PM)

    def config_from_args(self, a: argparse.Namespace) -> dict:
        c = {k: getattr(a, k) for k in SHARED}
        c["model"] = "d3pm"
        c.update({k: getattr(a, k, o.default) for k, o in _D3PM.items()})
        return c

    def run_tag(self, c: dict) -> str:
        return "d3pm"

    def check_config(self, c: dict) -> dict:
        # runs written before --initial-bound existed evaluated the step-0 bound
        return super().check_config({"initial_bound": True, **c})

    def train(self, a: argparse.Namespace, session) -> int:
        c = session.config
        run = session.run
        intr = session.interrupts
        intr.doing = "loading the data"
        ds = load_data(c)
        _resolve(c, ds)
        warn_if_small(ds, c)
        transition = build_transition(c, ds.num_levels)
        state, optimiser = build_state(c, ds, transition)
        mesh = sft.make_mesh()
        state = sft.replicate(state, mesh)  # placed as the loop places it: the step-0 and final bounds compile once
        levels = _eval_levels(c, ds)
        key = eval_key(c["seed"])

        def config_doc():
            return {
                "config": c,
                "data": {
                    "name": ds.name,
                    "source": ds.source,
                    "shape": list(ds.shape),
                    "num_levels": ds.num_levels,
                    "alphabet": ds.alphabet,
                    "n_train": len(ds.train),
                    "n_test": len(ds.test),
                },
                "transition": {
                    "class": type(transition).__name__,
                    "num_states": transition.num_states,
                    "num_steps": transition.num_steps,
                },
                "parameters": count_params(state.model),
                "devices": [str(d) for d in jax.devices()],
                "versions": {"scoreflow": sf.__version__, "jax": jax.__version__},
            }

        state = session.begin(state, config_doc)
        bar = session.progress

        def bound_of(model, when):
            what = f"evaluating the exact bound {when} ({len(levels)} test examples x {c['timesteps']} terms)"
            with phase(what, total=len(levels), unit="examples", interrupts=intr, bar=bar) as advance:
                return test_bound(model, transition, levels, key, advance)

        if c["initial_bound"] and not session.resume:
            session.log(0, {"test_bound_bpd": float(np.mean(bound_of(state.model, "at step 0")))})
        print(
            f"run folder: {run.path}  |  D3PM {c['transition']}, T={c['timesteps']}, "
            f"{transition.num_states} states  |  "
            f"data {ds.name} {ds.shape}, {len(ds.train)} train / {len(ds.test)} test  |  "
            f"{count_params(state.model)} parameters",
            file=sys.stderr,
        )
        step_fn = sft.make_train_step(
            build_objective(transition, c["hybrid_coeff"]), optimiser, ema_decay=c["ema_decay"], mesh=mesh
        )
        state = session.loop(state, step_fn, ds.levels("train").astype(np.int32), mesh=mesh)
        model = state.ema if state.ema is not None else state.model
        per_example = bound_of(model, "of the EMA model")
        bound = float(np.mean(per_example))
        session.log(int(state.step), {"test_bound_bpd": bound})

        records = run.read_metrics()
        results = {
            **session.timing(int(state.step)),
            "test_bound_bpd": bound,
            "test_bound_bpd_stderr_over_examples": float(per_example.std(ddof=1) / math.sqrt(len(per_example)))
            if len(per_example) > 1
            else None,
            "initial_test_bound_bpd": next((r["test_bound_bpd"] for r in records if r["step"] == 0), None),
            "eval_examples": int(len(levels)),
            "baselines_bpd": sfd.baselines(ds),
        }
        with phase(
            f"drawing {c['num_samples']} samples ({c['timesteps']} ancestral steps; compiling first)", interrupts=intr
        ):
            samples = draw_samples(model, transition, ds.shape, c["num_samples"], sample_key(c["seed"]))
        from .. import plots

        path = write_samples(run.file("samples"), samples, ds, f"{ds.name}: {len(samples)} D3PM samples")
        session.wrote(path, run.file("samples.npy"))
        reference = {"test bound": bound, "categorical": results["baselines_bpd"]["categorical"]}
        plots.save_curves(run.file("curves.png"), records, reference)
        session.wrote(run.file("curves.png"))
        results["wall_seconds"] = session.wall_seconds()
        session.wrote(run.write_json("results.json", results))
        print(summary(session.trained_line(results), c, ds, results))
        print(session.files_line())
        return 0

    def sample(self, a: argparse.Namespace, run, interrupts) -> int:
        interrupts.doing = "loading the run"
        _, c, ds, transition, state = load_run(run)
        model = state.ema if state.ema is not None else state.model
        num_samples = c["num_samples"] if a.num_samples is None else a.num_samples
        seed = c["seed"] if a.seed is None else a.seed
        step = int(state.step)
        exts = (".txt" if ds.alphabet is not None else ".png", ".npy")
        name = f"samples_step{step:06d}" + ("" if seed == c["seed"] else f"_seed{seed}")
        stem, note = output_stem(run, a.output, name, exts)
        what = f"drawing {num_samples} samples ({c['timesteps']} ancestral steps; compiling first)"
        with phase(what, interrupts=interrupts):
            samples = draw_samples(model, transition, ds.shape, num_samples, sample_key(seed))
        path = write_samples(stem, samples, ds, f"{ds.name}: {num_samples} D3PM samples")
        if note:
            print(note, file=sys.stderr)
        print(f"wrote {path} and {stem}.npy ({num_samples} samples, step {step})")
        return 0

    def nll(self, a: argparse.Namespace, run, interrupts) -> int:
        raise UsageError(
            f"RUN {run.path!r} is a D3PM run (--model d3pm): `nll` computes the probability-flow likelihood of "
            "continuous models; a D3PM run reports its exact bound as test_bound_bpd in results.json "
            "(`scoreflow info RUN`)"
        )


D3PM_FAMILY = registry.register(D3PM())
