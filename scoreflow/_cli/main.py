"""The `scoreflow` command: `train` (the main job), `sample RUN`, `nll RUN`, `info RUN`.

`train --model continuous` (the default) trains a continuous-time score model; `train --model d3pm` a discrete
diffusion model (D3PM), whose command path lives in `d3pm.py`.

Strings from the command line become objects in exactly one place, the `TABLE` below; everything after it
works with scoreflow's strategy objects.
"""

import argparse
import json
import math
import os
import sys
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoreflow as sf

from .. import data as sfd, train as sft


# ---------------------------------------------------------------------------------------------------------------
# The one table from strings to objects. Each entry is a factory taking the resolved config `c` (and what it needs).
TABLE = {
    "schedule": {
        "learned": lambda c, key: sf.LearnedSchedule(
            c["gamma_min"], c["gamma_max"], hidden=c["schedule_hidden"], key=key
        ),
        "cosine": lambda c, key: sf.CosineSchedule(c["gamma_min"], c["gamma_max"]),
        "linear": lambda c, key: sf.LinearSchedule(),
        "fixed-linear": lambda c, key: sf.FixedLinearSchedule(c["gamma_min"], c["gamma_max"]),
    },
    "sde": {
        "vp": lambda schedule: sf.VPSDE(schedule),
        "subvp": lambda schedule: sf.SubVPSDE(schedule),
        "ve": lambda schedule: sf.VESDE(),
        "edm": lambda schedule: sf.EDMSDE(),
    },
    "parameterisation": {
        "eps": sf.EpsPrediction,
        "x0": sf.X0Prediction,
        "v": sf.VPrediction,
        "score": sf.ScorePrediction,
        "edm": sf.EDMPreconditioning,
    },
    "network": {
        "unet": lambda c, shape, key: sf.UNet(
            shape[-1],
            shape[0],
            channels=tuple(c["channels"]),
            num_res_blocks=c["res_blocks"],
            attention_resolutions=tuple(c["attention"]),
            dropout=c["dropout"],
            key=key,
        ),
        "mlp": lambda c, shape, key: sf.MLP(shape[0], width=c["width"], depth=c["depth"], key=key),
    },
    "weighting": {
        "simple": sf.SimpleWeighting,
        "likelihood": sf.LikelihoodWeighting,
        "v": sf.VWeighting,
        "edm": sf.EDMWeighting,
        "elbo": sf.ELBOWeighting,
        "sigmoid": sf.SigmoidWeighting,
        "edm-monotone": sf.EDMMonotoneWeighting,
    },
    "loss": {"vdm": "VDM continuous-time VLB (bits/dim)", "dsm": "denoising score matching with --weighting"},
    "model": {
        "continuous": "continuous-time score model (--sde, --loss, ...: the default job)",
        "d3pm": "discrete diffusion on the data's levels or characters (--transition, --timesteps, ...)",
    },
    # D3PM transitions over `num_classes` data levels and `steps` steps (Austin et al., 2021, App. B).
    "transition": {
        "gaussian": lambda num_classes, steps: sf.GaussianTransition(
            num_classes, steps, sf.LinearBetaSchedule(0.02, 1.0)
        ),
        "uniform": lambda num_classes, steps: sf.UniformTransition(num_classes, steps, sf.CosineBetaSchedule()),
        "absorbing": lambda num_classes, steps: sf.AbsorbingTransition(
            num_classes, steps, sf.MutualInformationSchedule()
        ),
    },
    "sampler": {
        "pf": lambda steps: sf.ProbabilityFlow(),
        "ddim": lambda steps: sf.DDIM(steps=steps),
        "dpm-solver": lambda steps: sf.DPMSolverPP(steps=steps),
        "euler-maruyama": lambda steps: sf.PredictorCorrector(sf.EulerMaruyama(), sf.NoCorrector(), steps=steps),
        "pc": lambda steps: sf.PredictorCorrector(steps=steps),
        "edm-heun": lambda steps: sf.EDMHeun(steps=steps),
    },
    "solver": {
        "tsit5": diffrax.Tsit5,
        "dopri5": diffrax.Dopri5,
        "dopri8": diffrax.Dopri8,
        "bosh3": diffrax.Bosh3,
        "heun": diffrax.Heun,
    },
    "divergence": {
        "exact": lambda probes: sf.ExactTrace(),
        "hutchinson": lambda probes: sf.Hutchinson(num_probes=probes),
    },
    "dequantisation": {
        "discretised": lambda sde: sf.DiscretisedBound(sde),
        "uniform": lambda sde: sf.UniformDequantisation(),
    },
}

# Defaults of the main job (`scoreflow train` with no arguments).
DEFAULTS = dict(
    data="digits",
    bits=8,
    network="unet",
    channels=[32, 64],
    res_blocks=1,
    attention=[],
    dropout=0.0,
    width=128,
    depth=3,
    parameterisation="eps",
    sde="vp",
    schedule="learned",
    schedule_hidden=64,
    gamma_min=-8.0,
    gamma_max=5.0,
    loss="vdm",
    weighting="simple",
    steps=2000,
    batch_size=64,
    accumulate=1,
    lr=3e-3,
    warmup=100,
    clip=1.0,
    ema_decay=0.995,
    seed=0,
    log_every=25,
    checkpoint_every=500,
    keep=3,
    eval_repeats=4,
    nll_examples=4,
    num_samples=64,
    sampler="dpm-solver",
    sample_steps=50,
    solver="tsit5",
    rtol=1e-3,
    atol=1e-3,
    divergence="exact",
    probes=1,
    dequantisation="discretised",
)


# ---------------------------------------------------------------------------------------------------------------
# argparse types: every bad value names the option (argparse adds "argument --x:") and the value.
def _number(convert, ok, expected: str):
    """An argparse type: `convert` the string, then require `ok(value)`; the error names the value."""

    def parse(s: str):
        try:
            v = convert(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}")
        return v

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_decay = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def _int_list(s: str) -> list[int]:
    if s.strip() == "":
        return []
    try:
        v = [int(p) for p in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {s!r}") from None
    if any(p < 1 for p in v):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {s!r}")
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}")
    return v


def _bits(s: str) -> int:
    v = _positive_int(s)
    if v > 16:
        raise argparse.ArgumentTypeError(f"expected a bit depth in 1..16, got {s!r}")
    return v


def _choice(name: str) -> dict:
    return dict(choices=sorted(TABLE[name]), metavar="{" + ",".join(sorted(TABLE[name])) + "}")


# ---------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scoreflow",
        description="Train and evaluate diffusion / score-based models. `scoreflow train` with no arguments "
        "trains a VDM (learned schedule, small U-Net, eps prediction) on the built-in 8x8 digits and reports "
        "test bits/dim next to simple baselines.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,sample,nll,info}")
    d = DEFAULTS

    t = sub.add_parser(
        "train",
        help="train a model and write a run folder (the main job)",
        description="Train, evaluate (test VLB and probability-flow bits/dim), sample and plot. "
        "Writes config.json, metrics.jsonl, checkpoints/, results.json, samples.png, curves.png, "
        "schedule.png to --out.",
    )
    g = t.add_argument_group("data")
    g.add_argument(
        "--data",
        default=d["data"],
        help="'digits' (built in: sklearn 8x8, 17 levels), 'digits-binary' (the same, binarised at level 8), "
        "'text' (characters of the Python reference manual, text8 alphabet; --model d3pm), 'text8:PATH' (a "
        "local text8 file; --model d3pm), "
        "'toy:NAME' (2-D mixture with exact density: " + ", ".join(sorted(sfd.TOY_MIXTURES)) + "), a "
        ".npy/.npz file of integer images/vectors, or a folder of PNG images (default: %(default)s)",
    )
    g.add_argument(
        "--bits", type=_bits, default=d["bits"], help="bit depth of --data files/PNGs (default: %(default)s)"
    )
    g.add_argument(
        "--seq-len",
        type=_positive_int,
        default=None,
        help="characters per sequence of --data text / text8:PATH (default: 64)",
    )
    g = t.add_argument_group("model")
    g.add_argument(
        "--model",
        default="continuous",
        help="; ".join(f"{k}: {v}" for k, v in TABLE["model"].items()) + " (default: %(default)s)",
        **_choice("model"),
    )
    g.add_argument(
        "--network",
        default=d["network"],
        help="U-Net for images, MLP for vectors (default: %(default)s)",
        **_choice("network"),
    )
    g.add_argument(
        "--channels",
        type=_int_list,
        default=d["channels"],
        help="U-Net channels per level, e.g. 32,64 (default: 32,64)",
    )
    g.add_argument(
        "--res-blocks",
        type=_positive_int,
        default=d["res_blocks"],
        help="U-Net residual blocks per level (default: %(default)s)",
    )
    g.add_argument(
        "--attention",
        type=_int_list,
        default=d["attention"],
        help="U-Net resolutions with self-attention, e.g. 4 (default: none)",
    )
    g.add_argument(
        "--dropout", type=_decay, default=d["dropout"], help="U-Net dropout rate in [0, 1) (default: %(default)s)"
    )
    g.add_argument(
        "--width",
        type=_positive_int,
        default=d["width"],
        help="MLP width; with --model d3pm on sequences, the transformer's width (default: %(default)s)",
    )
    g.add_argument(
        "--depth",
        type=_positive_int,
        default=d["depth"],
        help="MLP residual blocks; with --model d3pm on sequences, transformer blocks (default: %(default)s)",
    )
    g.add_argument(
        "--parameterisation",
        default=d["parameterisation"],
        help="what the network predicts (default: %(default)s)",
        **_choice("parameterisation"),
    )
    g.add_argument("--sde", default=d["sde"], help="forward process (default: %(default)s)", **_choice("sde"))
    g.add_argument(
        "--schedule",
        default=d["schedule"],
        help="noise schedule of vp/subvp; 'learned' is VDM's monotone network (default: %(default)s)",
        **_choice("schedule"),
    )
    g.add_argument(
        "--gamma-min",
        type=float,
        default=d["gamma_min"],
        help="-log SNR at t=0 of the learned, cosine and fixed-linear schedules; -8 leaves 17-level data "
        "a reconstruction cost near 0 (default: %(default)s)",
    )
    g.add_argument("--gamma-max", type=float, default=d["gamma_max"], help="-log SNR at t=1 (default: %(default)s)")
    g.add_argument(
        "--schedule-hidden",
        type=_positive_int,
        default=d["schedule_hidden"],
        help="width of the learned schedule (default: %(default)s)",
    )
    g = t.add_argument_group("discrete diffusion (--model d3pm)")
    g.add_argument(
        "--transition",
        default=None,
        help="forward transition: discretised Gaussian (ordinal levels; linear betas 0.02..1), uniform (cosine), "
        "or absorbing [MASK] (mutual-information schedule) (default: gaussian for images and vectors, "
        "absorbing for text)",
        **_choice("transition"),
    )
    g.add_argument("--timesteps", type=_positive_int, default=None, help="number of diffusion steps T (default: 1000)")
    g.add_argument(
        "--hybrid-coeff",
        type=_nonneg_float,
        default=None,
        help="weight of the auxiliary cross-entropy in the hybrid loss, with the whole bound weighted 1; "
        "0 trains on the bound alone (default: 0.001 * T, D3PM's 0.001 on a single-step term)",
    )
    g.add_argument(
        "--eval-examples",
        type=_positive_int,
        default=None,
        help="first test examples on which the exact bound (all T terms) is reported (default: 1000)",
    )
    g = t.add_argument_group("objective and optimisation")
    g.add_argument(
        "--loss",
        default=d["loss"],
        help="; ".join(f"{k}: {v}" for k, v in TABLE["loss"].items()) + " (default: %(default)s)",
        choices=sorted(TABLE["loss"]),
    )
    g.add_argument(
        "--weighting", default=d["weighting"], help="DSM loss weighting (default: %(default)s)", **_choice("weighting")
    )
    g.add_argument("--steps", type=_positive_int, default=d["steps"], help="training steps (default: %(default)s)")
    g.add_argument(
        "--batch-size",
        type=_positive_int,
        default=d["batch_size"],
        help="examples per micro-batch, divisible by the device count (default: %(default)s)",
    )
    g.add_argument(
        "--accumulate",
        type=_positive_int,
        default=d["accumulate"],
        help="micro-batches per step (gradient accumulation) (default: %(default)s)",
    )
    g.add_argument(
        "--lr",
        type=_positive_float,
        default=d["lr"],
        help="peak learning rate of AdamW, warm-up then cosine (default: %(default)s)",
    )
    g.add_argument("--warmup", type=_nonneg_int, default=d["warmup"], help="warm-up steps (default: %(default)s)")
    g.add_argument(
        "--clip", type=_positive_float, default=d["clip"], help="global gradient-norm clip (default: %(default)s)"
    )
    g.add_argument(
        "--ema-decay", type=_decay, default=d["ema_decay"], help="EMA decay in [0, 1) (default: %(default)s)"
    )
    g.add_argument(
        "--seed",
        type=_nonneg_int,
        default=d["seed"],
        help="seed of initialisation, data order and noise (default: %(default)s)",
    )
    g = t.add_argument_group("run folder")
    g.add_argument("--out", default=None, help="run folder (default: runs/<data>-<loss>-<time>)")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with its saved config "
        "(bit-identical to an uninterrupted run)",
    )
    g.add_argument(
        "--log-every",
        type=_positive_int,
        default=d["log_every"],
        help="steps between metrics lines (default: %(default)s)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=d["checkpoint_every"],
        help="steps between checkpoints (default: %(default)s)",
    )
    g.add_argument("--keep", type=_positive_int, default=d["keep"], help="checkpoints kept (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = t.add_argument_group("evaluation")
    g.add_argument(
        "--eval-repeats",
        type=_positive_int,
        default=d["eval_repeats"],
        help="time/noise draws per test example for the test VLB (default: %(default)s)",
    )
    g.add_argument(
        "--nll-examples",
        type=_nonneg_int,
        default=d["nll_examples"],
        help="held-out examples for the probability-flow likelihood; 0 skips it (default: %(default)s)",
    )
    g.add_argument(
        "--num-samples",
        type=_positive_int,
        default=d["num_samples"],
        help="samples drawn for samples.png (default: %(default)s)",
    )
    _sampling_args(g, d)
    _nll_args(g, d)

    s = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Draw samples from the EMA model of RUN; writes a PNG and a .npy.",
    )
    s.add_argument("run", help="run folder written by `scoreflow train`")
    s.add_argument("--num-samples", type=_positive_int, default=64, help="number of samples (default: %(default)s)")
    s.add_argument("--seed", type=_nonneg_int, default=1, help="sampling seed (default: %(default)s)")
    s.add_argument("--output", default=None, help="PNG path (default: RUN/samples-seed<seed>.png)")
    _sampling_args(s, d)

    n = sub.add_parser(
        "nll",
        help="probability-flow likelihood of a trained run",
        description="Exact or Hutchinson probability-flow likelihood (bits/dim with dequantisation for "
        "quantised data) of RUN's EMA model on test examples.",
    )
    n.add_argument("run", help="run folder written by `scoreflow train`")
    n.add_argument(
        "--num-examples", type=_positive_int, default=d["nll_examples"], help="test examples (default: %(default)s)"
    )
    n.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of dequantisation noise and probes (default: %(default)s)"
    )
    _nll_args(n, d)

    i = sub.add_parser(
        "info", help="summarise a run folder", description="Print RUN's config, checkpoints, parameters and results."
    )
    i.add_argument("run", help="run folder written by `scoreflow train`")
    return p


def _sampling_args(g, d):
    g.add_argument("--sampler", default=d["sampler"], help="sampler (default: %(default)s)", **_choice("sampler"))
    g.add_argument(
        "--sample-steps",
        type=_positive_int,
        default=d["sample_steps"],
        help="steps of fixed-step samplers (default: %(default)s)",
    )


def _nll_args(g, d):
    g.add_argument(
        "--solver", default=d["solver"], help="diffrax ODE solver (default: %(default)s)", **_choice("solver")
    )
    g.add_argument("--rtol", type=_positive_float, default=d["rtol"], help="relative tolerance (default: %(default)s)")
    g.add_argument("--atol", type=_positive_float, default=d["atol"], help="absolute tolerance (default: %(default)s)")
    g.add_argument(
        "--divergence",
        default=d["divergence"],
        help="exact trace or Hutchinson estimator (default: %(default)s)",
        **_choice("divergence"),
    )
    g.add_argument("--probes", type=_positive_int, default=d["probes"], help="Hutchinson probes (default: %(default)s)")
    g.add_argument(
        "--dequantisation",
        default=d["dequantisation"],
        help="from density to discrete bits: VDM's discretised bound or uniform noise (default: %(default)s)",
        **_choice("dequantisation"),
    )


# ---------------------------------------------------------------------------------------------------------------
class UsageError(Exception):
    """A bad option value found after parsing; reported like argparse's errors (exit code 2)."""


def load_data(c: dict) -> sfd.Dataset:
    spec = c["data"]
    try:
        if spec == "digits":
            return sfd.load_digits()
        if spec == "digits-binary":
            return sfd.load_binary_digits()
        if spec == "text":
            return sfd.load_text(c.get("seq_len") or 64)
        if spec.startswith("text8:"):
            return sfd.load_text8_dataset(spec[6:], c.get("seq_len") or 64)
        if spec.startswith("toy:"):
            name = spec[4:]
            if name not in sfd.TOY_MIXTURES:
                raise UsageError(
                    f"--data {spec!r}: unknown toy mixture {name!r}; choose from {sorted(sfd.TOY_MIXTURES)}"
                )
            return sfd.load_toy(name, seed=c["seed"])
        if os.path.isdir(spec):
            return sfd.load_png_folder(spec, bits=c["bits"])
        if spec.endswith((".npy", ".npz")) or os.path.exists(spec):
            return sfd.load_array_file(spec, bits=c["bits"])
    except sfd.DataError as e:
        raise UsageError(f"--data {spec!r}: {e}") from None
    raise UsageError(
        f"--data {spec!r}: not 'digits', 'digits-binary', 'text', 'text8:PATH', 'toy:NAME', an existing .npy/.npz "
        "file or a folder of PNGs"
    )


def check_config(c: dict, ds: sfd.Dataset) -> None:
    """Combinations that cannot work, reported before anything is built."""
    shape = ds.shape
    if ds.alphabet is not None:
        raise UsageError(f"--data {c['data']}: character data need --model d3pm (got --model continuous)")
    if c["loss"] == "vdm":
        if c["sde"] != "vp":
            raise UsageError(
                f"--loss vdm needs --sde vp (the VDM bound is for variance-preserving processes); got --sde {c['sde']}"
            )
        if ds.num_levels is None:
            raise UsageError(
                f"--loss vdm needs quantised data (images with a bit depth); --data {c['data']} is continuous: "
                "use --loss dsm"
            )
    if c["network"] == "unet":
        if len(shape) != 3 or shape[1] != shape[2]:
            raise UsageError(
                f"--network unet needs square images (C, H, W); --data {c['data']} has examples of shape "
                f"{shape}: use --network mlp"
            )
        factor = 2 ** (len(c["channels"]) - 1)
        if not c["channels"] or shape[-1] % factor or any(ch % 8 for ch in c["channels"]):
            raise UsageError(
                f"--channels {','.join(map(str, c['channels']))}: needs multiples of 8, one per level, with "
                f"image size {shape[-1]} divisible by 2^(levels - 1)"
            )
        sizes = [shape[-1] // 2**i for i in range(len(c["channels"]))]
        if any(a not in sizes for a in c["attention"]):
            raise UsageError(f"--attention {','.join(map(str, c['attention']))}: resolutions must be among {sizes}")
    if c["network"] == "mlp" and len(shape) != 1:
        raise UsageError(
            f"--network mlp needs vector data; --data {c['data']} has examples of shape {shape}: use --network unet"
        )
    if not c["gamma_min"] < c["gamma_max"]:
        raise UsageError(f"--gamma-min {c['gamma_min']} must be below --gamma-max {c['gamma_max']}")
    if c["schedule"] == "learned" and c["sde"] not in ("vp", "subvp"):
        raise UsageError(f"--schedule applies to --sde vp/subvp only; got --sde {c['sde']} with --schedule learned")
    n_dev = jax.device_count()
    if c["batch_size"] % n_dev:
        raise UsageError(f"--batch-size {c['batch_size']}: must be divisible by the number of devices ({n_dev})")


def build_model(c: dict, shape: tuple[int, ...]) -> sf.ScoreModel:
    k_net, k_sched = jax.random.split(jax.random.key(c["seed"]))
    schedule = TABLE["schedule"][c["schedule"]](c, k_sched)
    sde = TABLE["sde"][c["sde"]](schedule)
    net = TABLE["network"][c["network"]](c, shape, k_net)
    return sf.ScoreModel(net, sde, TABLE["parameterisation"][c["parameterisation"]]())


def _schedule_interior(model):
    # Same leaves as `sf.learned_schedule_interior`, without its `tuple[Array, ...]` return annotation, which
    # fails runtime type checking when `eqx.tree_at` calls it on a tree of placeholder leaves.
    s = model.sde.schedule
    return (s.w1, s.b1, s.w2, s.b2, s.w3)


def build_objective(c: dict, num_levels: int | None):
    if c["loss"] == "vdm":
        learned = c["schedule"] == "learned"

        def vdm(model, x, key):
            if learned:  # VDM's variance-minimising gradient for the schedule's shape
                loss, grads = sf.vdm_loss_and_grads(
                    model, x, key=key, num_levels=num_levels, variance_params=_schedule_interior
                )
                return (loss, {"bpd": loss}), grads
            loss, grads = eqx.filter_value_and_grad(
                lambda m: jnp.mean(sf.batch_vdm_vlb(m, x, key=key, num_levels=num_levels).total)
            )(model)
            return (loss, {"bpd": loss}), grads

        return sft.CustomGradient(vdm)
    weighting = TABLE["weighting"][c["weighting"]]()

    def dsm(model, x, key):
        return sf.batch_dsm_loss(model, x, key=key, weighting=weighting), {}

    return dsm


def build_state(c: dict, shape: tuple[int, ...]):
    model = build_model(c, shape)
    optimiser = sft.make_optimiser(
        c["lr"], total_steps=c["steps"], warmup_steps=min(c["warmup"], c["steps"]), clip_norm=c["clip"]
    )
    state = sft.init_state(model, optimiser, key=jax.random.fold_in(jax.random.key(c["seed"]), 1))
    return state, optimiser


# ---------------------------------------------------------------------------------------------------------------
def _vlb_bpd(model, ds, c, key) -> float:
    """Test-set VLB in bits/dim (mean over examples and `eval_repeats` draws of t and noise)."""
    x = jnp.asarray(ds.test)

    @eqx.filter_jit
    def one(m, k):
        return jnp.mean(sf.batch_vdm_vlb(m, x, key=k, num_levels=ds.num_levels).total)

    return float(np.mean([float(one(model, jax.random.fold_in(key, r))) for r in range(c["eval_repeats"])]))


def _pf_nll(model, ds, c, n, key) -> dict:
    """Probability-flow likelihood of the first `n` test examples: bits/dim (quantised) or nats (continuous)."""
    solver = TABLE["solver"][c["solver"]]()
    divergence = TABLE["divergence"][c["divergence"]](c["probes"])
    sde = model.sde
    kw = dict(solver=solver, rtol=c["rtol"], atol=c["atol"], divergence=divergence)
    if ds.num_levels is None:
        x = jnp.asarray(ds.test[:n])
        res = eqx.filter_jit(lambda m, x, k: sf.log_likelihood(m, m.sde, x, key=k, **kw))(model, x, key)
        out = {"nll_nats": float(-jnp.mean(res.log_prob)), "nfe": float(jnp.mean(res.nfe)), "examples": int(x.shape[0])}
        if ds.density is not None:
            out["exact_nll_nats"] = float(-jnp.mean(ds.density.log_prob(x.astype(ds.density.means.dtype))))
        return out
    L = ds.num_levels
    levels = jnp.asarray(ds.levels("test")[:n])
    # Level k sits at 2k/(L-1) - 1 (VDM's convention), i.e. the bin [k, k+1) maps to x = shift + scale (k + u).
    scaling = sf.AffineScaling(scale=2.0 / (L - 1), shift=-1.0 - 1.0 / (L - 1))
    dequant = TABLE["dequantisation"][c["dequantisation"]](sde)

    @eqx.filter_jit
    def run(m, levels, k):
        return sf.bits_per_dim(
            lambda x, kk: sf.log_likelihood(m, m.sde, x, key=kk, **kw),
            levels,
            num_levels=L,
            key=k,
            scaling=scaling,
            dequantisation=dequant,
        )

    res = run(model, levels, key)
    bpd = np.asarray(res.bits_per_dim)
    return {
        "bpd": float(bpd.mean()),
        "bpd_stderr_over_examples": float(bpd.std(ddof=1) / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan"),
        "examples": int(len(bpd)),
    }


def _draw_samples(model, shape, c, n, seed) -> np.ndarray:
    sampler = TABLE["sampler"][c["sampler"]](c["sample_steps"])
    res = eqx.filter_jit(lambda m, k: sf.sample(m, m.sde, k, (n, *shape), sampler=sampler))(model, jax.random.key(seed))
    return np.asarray(res.samples)


def _write_plots(run: str, model, ds, c, records, reference, samples) -> None:
    from .. import plots

    shown = np.clip(samples, -1, 1) if ds.num_levels is not None else samples
    plots.save_samples(
        os.path.join(run, "samples.png"),
        shown,
        density=ds.density,
        title=f"{ds.name}: {len(samples)} samples ({c['sampler']})",
    )
    plots.save_curves(os.path.join(run, "curves.png"), records, reference)
    sde = model.sde
    t = np.linspace(float(sde.t0), float(sde.T), 200)
    lam = np.asarray(jax.vmap(sde.log_snr)(jnp.asarray(t)))
    init = build_model(c, ds.shape).sde
    lam0 = np.asarray(jax.vmap(init.log_snr)(jnp.asarray(t)))
    plots.save_schedule(os.path.join(run, "schedule.png"), t, lam, lam0)


def _read_metrics(path: str, upto: int | None = None) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if upto is None or r["step"] <= upto]


def _count_params(model) -> int:
    return int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))))


def _d3pm_run(run: str) -> bool:
    """Whether RUN's config.json (if any) is a D3PM run's."""
    cfg_path = os.path.join(run, "config.json")
    if not os.path.exists(cfg_path):
        return False
    with open(cfg_path) as f:
        return json.load(f)["config"].get("model", "continuous") == "d3pm"


def cmd_train(a: argparse.Namespace) -> int:
    from . import d3pm

    if (a.model == "d3pm" and not a.resume) or (a.resume and a.out is not None and _d3pm_run(a.out)):
        return d3pm.cmd_train(a)
    if not a.resume:
        d3pm.check_not_given(a)
    start = time.time()
    if a.resume:
        if a.out is None:
            raise UsageError("--resume needs --out RUN (the run folder to continue)")
        cfg_path = os.path.join(a.out, "config.json")
        if not os.path.exists(cfg_path):
            raise UsageError(f"--out {a.out!r}: no config.json there, nothing to resume")
        with open(cfg_path) as f:
            c = json.load(f)["config"]
        print(f"resuming {a.out} with its saved config (other options are ignored)", file=sys.stderr)
    else:
        c = {k: getattr(a, k) for k in DEFAULTS}
        if a.out is None:
            tag = c["data"].replace(":", "-").replace(os.sep, "_").strip("._") or "data"
            a.out = os.path.join("runs", f"{tag}-{c['loss']}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(os.path.join(a.out, "config.json")):
            raise UsageError(
                f"--out {a.out!r}: already holds a run; pass --resume to continue it or choose another --out"
            )
    c["progress"] = not a.no_progress
    ds = load_data(c)
    check_config(c, ds)
    run = a.out
    os.makedirs(os.path.join(run, "checkpoints"), exist_ok=True)
    state, optimiser = build_state(c, ds.shape)
    metrics_path = os.path.join(run, "metrics.jsonl")
    if a.resume:
        restored = sft.restore_latest(os.path.join(run, "checkpoints"), state)
        if restored is not None:
            state = restored[0]
        done = int(state.step)
        kept = _read_metrics(metrics_path, upto=done)
        with open(metrics_path, "w") as f:  # drop lines logged after the checkpoint: they will be redone
            f.writelines(json.dumps(r) + "\n" for r in kept)
        print(f"restored step {done}", file=sys.stderr)
    else:
        config = {
            "config": {k: c[k] for k in DEFAULTS},
            "data": {
                "name": ds.name,
                "source": ds.source,
                "shape": list(ds.shape),
                "num_levels": ds.num_levels,
                "n_train": len(ds.train),
                "n_test": len(ds.test),
            },
            "parameters": _count_params(state.model),
            "devices": [str(d) for d in jax.devices()],
            "versions": {"scoreflow": sf.__version__, "jax": jax.__version__},
        }
        with open(os.path.join(run, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        open(metrics_path, "w").close()
    print(
        f"run folder: {run}  |  data {ds.name} {ds.shape}, {len(ds.train)} train / {len(ds.test)} test  |  "
        f"{_count_params(state.model)} parameters  |  {jax.device_count()} device(s)",
        file=sys.stderr,
    )

    step_fn = sft.make_train_step(
        build_objective(c, ds.num_levels), optimiser, ema_decay=c["ema_decay"], mesh=sft.make_mesh()
    )
    t0 = time.time()
    metrics_file = open(metrics_path, "a")

    def log(step, m):
        metrics_file.write(json.dumps({"step": step, **m, "time": round(time.time() - t0, 3)}) + "\n")
        metrics_file.flush()

    try:
        state = sft.train_loop(
            state,
            step_fn,
            ds.train,
            num_steps=c["steps"],
            batch_size=c["batch_size"],
            accumulate=c["accumulate"],
            seed=c["seed"],
            checkpoint_dir=os.path.join(run, "checkpoints"),
            checkpoint_every=c["checkpoint_every"],
            keep=c["keep"],
            log_every=c["log_every"],
            callback=log,
            progress=c["progress"],
        )
    finally:
        metrics_file.close()
    train_time = time.time() - t0

    model = state.ema if state.ema is not None else state.model
    key = jax.random.fold_in(jax.random.key(c["seed"]), 2)
    results = {"steps": int(state.step), "train_seconds": round(train_time, 1)}
    if ds.num_levels is not None and c["sde"] == "vp":
        results["test_vlb_bpd"] = _vlb_bpd(model, ds, c, key)
    if c["nll_examples"] > 0:
        results["pf"] = _pf_nll(model, ds, c, min(c["nll_examples"], len(ds.test)), jax.random.fold_in(key, 1))
    if ds.num_levels is not None:
        results["baselines_bpd"] = sfd.baselines(ds)
    samples = _draw_samples(model, ds.shape, c, c["num_samples"], c["seed"] + 1)
    np.save(os.path.join(run, "samples.npy"), samples)
    reference = {}
    if "test_vlb_bpd" in results:
        reference["test VLB"] = results["test_vlb_bpd"]
    if "baselines_bpd" in results:
        reference["categorical"] = results["baselines_bpd"]["categorical"]
    _write_plots(run, model, ds, c, _read_metrics(metrics_path), reference, samples)
    results["wall_seconds"] = round(time.time() - start, 1)
    with open(os.path.join(run, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(_summary(ds, results))
    return 0


def _summary(ds, r: dict) -> str:
    lines = [f"trained {r['steps']} steps in {r['train_seconds']} s (wall {r.get('wall_seconds', '?')} s)"]
    if "test_vlb_bpd" in r:
        lines.append(
            f"  test VLB (VDM bound, EMA model)          {r['test_vlb_bpd']:.4f} bits/dim  ({len(ds.test)} test images)"
        )
    pf = r.get("pf")
    if pf and "bpd" in pf:
        lines.append(
            f"  probability-flow likelihood (ODE)        {pf['bpd']:.4f} bits/dim  "
            f"(+- {pf['bpd_stderr_over_examples']:.3f}, {pf['examples']} test images)"
        )
    if pf and "nll_nats" in pf:
        ex = f", exact density {pf['exact_nll_nats']:.4f}" if "exact_nll_nats" in pf else ""
        lines.append(
            f"  probability-flow NLL (ODE)               {pf['nll_nats']:.4f} nats{ex}  ({pf['examples']} test points)"
        )
    for name, v in r.get("baselines_bpd", {}).items():
        what = "per-pixel categorical (add-one)" if name == "categorical" else f"{name} compressor"
        lines.append(f"  baseline: {what:<31}{v:.4f} bits/dim")
    return "\n".join(lines)


def _load_run(run: str):
    cfg_path = os.path.join(run, "config.json")
    if not os.path.exists(cfg_path):
        raise UsageError(f"RUN {run!r}: not a run folder (no config.json)")
    with open(cfg_path) as f:
        cfg = json.load(f)
    c = cfg["config"]
    ds = load_data(c)
    state, _ = build_state(c, ds.shape)
    restored = sft.restore_latest(os.path.join(run, "checkpoints"), state)
    if restored is None:
        raise UsageError(f"RUN {run!r}: no checkpoint in {os.path.join(run, 'checkpoints')}")
    return cfg, c, ds, restored[0]


def cmd_sample(a) -> int:
    if _d3pm_run(a.run):
        from . import d3pm

        return d3pm.cmd_sample(a)
    _, c, ds, state = _load_run(a.run)
    c = dict(c, sampler=a.sampler, sample_steps=a.sample_steps)
    model = state.ema if state.ema is not None else state.model
    samples = _draw_samples(model, ds.shape, c, a.num_samples, a.seed)
    out = a.output or os.path.join(a.run, f"samples-seed{a.seed}.png")
    from .. import plots

    plots.save_samples(
        out,
        np.clip(samples, -1, 1) if ds.num_levels is not None else samples,
        density=ds.density,
        title=f"{ds.name}: {a.num_samples} samples ({a.sampler})",
    )
    np.save(os.path.splitext(out)[0] + ".npy", samples)
    print(f"wrote {out} and {os.path.splitext(out)[0] + '.npy'} ({a.num_samples} samples, step {int(state.step)})")
    return 0


def cmd_nll(a) -> int:
    if _d3pm_run(a.run):
        raise UsageError(
            f"RUN {a.run!r} is a D3PM run (--model d3pm): `nll` computes the probability-flow likelihood of "
            "continuous models; a D3PM run reports its exact bound as test_bound_bpd in results.json "
            "(`scoreflow info RUN`)"
        )
    _, c, ds, state = _load_run(a.run)
    c = dict(
        c,
        solver=a.solver,
        rtol=a.rtol,
        atol=a.atol,
        divergence=a.divergence,
        probes=a.probes,
        dequantisation=a.dequantisation,
    )
    model = state.ema if state.ema is not None else state.model
    t = time.time()
    r = _pf_nll(model, ds, c, min(a.num_examples, len(ds.test)), jax.random.key(a.seed))
    r.update(
        solver=a.solver,
        rtol=a.rtol,
        atol=a.atol,
        divergence=a.divergence,
        probes=a.probes,
        dequantisation=a.dequantisation,
        step=int(state.step),
        seconds=round(time.time() - t, 1),
    )
    with open(os.path.join(a.run, "nll.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")
    if "bpd" in r:
        print(
            f"{r['bpd']:.4f} bits/dim (+- {r['bpd_stderr_over_examples']:.3f} over {r['examples']} test examples; "
            f"{a.divergence}, {a.solver}, rtol={a.rtol}, atol={a.atol}, {a.dequantisation})"
        )
    else:
        print(
            f"{r['nll_nats']:.4f} nats NLL over {r['examples']} test points"
            + (f" (exact density: {r['exact_nll_nats']:.4f})" if "exact_nll_nats" in r else "")
        )
    return 0


def cmd_info(a) -> int:
    cfg_path = os.path.join(a.run, "config.json")
    if not os.path.exists(cfg_path):
        raise UsageError(f"RUN {a.run!r}: not a run folder (no config.json)")
    with open(cfg_path) as f:
        cfg = json.load(f)
    ckpts = sft.list_checkpoints(os.path.join(a.run, "checkpoints"))
    metrics = _read_metrics(os.path.join(a.run, "metrics.jsonl"))
    print(f"run {a.run}")
    print(
        f"  data        {cfg['data']['name']} {tuple(cfg['data']['shape'])}, {cfg['data']['n_train']} train / "
        f"{cfg['data']['n_test']} test, levels {cfg['data']['num_levels']}"
    )
    print(f"  parameters  {cfg['parameters']}")
    print("  config      " + " ".join(f"{k}={v}" for k, v in cfg["config"].items()))
    print(f"  checkpoints {[s for s, _ in ckpts]}")
    if metrics:
        last = metrics[-1]
        print(
            "  last logged "
            + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items())
        )
    res_path = os.path.join(a.run, "results.json")
    if os.path.exists(res_path):
        with open(res_path) as f:
            print("  results     " + json.dumps(json.load(f)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `scoreflow` console script. Returns the exit code (2 for bad options or data)."""
    parser = _parser()
    a = parser.parse_args(argv)
    try:
        return {"train": cmd_train, "sample": cmd_sample, "nll": cmd_nll, "info": cmd_info}[a.command](a)
    except (UsageError, sft.CheckpointError) as e:
        parser.exit(2, f"scoreflow {a.command}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
