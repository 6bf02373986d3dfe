"""`--model continuous` (the default): a continuous-time score model (VDM bound or denoising score matching),
evaluated by the test VLB and the probability-flow likelihood, sampled by any of scoreflow's samplers."""

import argparse
import json
import math
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoreflow as sf

from .. import data as sfd, train as sft
from . import guidance, registry
from .datasets import load_data, warn_if_small
from .options import (
    COMMON,
    Option,
    UsageError,
    check_unet_levels,
    decay,
    finite_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from .progress import phase
from .run import count_params, output_stem
from .table import TABLE


def _choices(name: str) -> tuple[str, ...]:
    return tuple(sorted(TABLE[name]))


SAMPLE_OPTIONS = (
    Option("sampler", "dpm-solver", "sampler", choices=_choices("sampler")),
    Option("sample_steps", 50, "steps of fixed-step samplers", positive_int),
)
NLL_OPTIONS = (
    Option("solver", "tsit5", "diffrax ODE solver", choices=_choices("solver")),
    Option("rtol", 1e-3, "relative tolerance", positive_float),
    Option("atol", 1e-3, "absolute tolerance", positive_float),
    Option("divergence", "exact", "exact trace or Hutchinson estimator", choices=_choices("divergence")),
    Option("probes", 1, "Hutchinson probes", positive_int),
    Option(
        "dequantisation",
        "discretised",
        "from density to discrete bits: VDM's discretised bound or uniform noise",
        choices=_choices("dequantisation"),
    ),
)
TRAIN_OPTIONS = (
    Option("network", "unet", "U-Net for images, MLP for vectors", choices=_choices("network")),
    Option("parameterisation", "eps", "what the network predicts", choices=_choices("parameterisation")),
    Option("sde", "vp", "forward process", choices=_choices("sde")),
    Option(
        "schedule",
        "learned",
        "noise schedule of vp/subvp; 'learned' is VDM's monotone network",
        choices=_choices("schedule"),
    ),
    Option(
        "gamma_min",
        -8.0,
        "-log SNR at t=0 of the learned, cosine and fixed-linear schedules; -8 leaves 17-level data a "
        "reconstruction cost near 0",
        finite_float,
    ),
    Option("gamma_max", 5.0, "-log SNR at t=1", finite_float),
    Option("schedule_hidden", 64, "width of the learned schedule", positive_int),
    Option(
        "loss",
        "vdm",
        "; ".join(f"{k}: {v}" for k, v in TABLE["loss"].items()),
        choices=tuple(sorted(TABLE["loss"])),
    ),
    Option("weighting", "simple", "DSM loss weighting", choices=_choices("weighting")),
    Option(
        "cond",
        "none",
        "class: condition the network on the data's class labels (built-in digits), trained with label dropout so "
        "that `sample RUN --class K --guidance G` can apply classifier-free guidance; none: unconditional",
        choices=("class", "none"),
    ),
    Option(
        "label_dropout",
        0.1,
        "with --cond class: fraction of training labels replaced by the null label (Ho & Salimans, 2022)",
        decay,
    ),
    Option("eval_repeats", 4, "time/noise draws per test example for the test VLB", positive_int),
    Option(
        "nll_examples",
        4,
        "held-out examples for the probability-flow likelihood; 0 skips it",
        nonneg_int,
    ),
    *SAMPLE_OPTIONS,
    *NLL_OPTIONS,
)
_ORDER = (
    "data bits network channels res_blocks attention dropout width depth parameterisation sde schedule "
    "schedule_hidden gamma_min gamma_max cond num_classes label_dropout loss weighting steps batch_size accumulate "
    "lr warmup clip ema_decay seed "
    "log_every checkpoint_every keep eval_repeats nll_examples num_samples sampler sample_steps solver rtol atol "
    "divergence probes dequantisation"
).split()
_OPTIONS = {o.key: o for o in (*COMMON, *TRAIN_OPTIONS)}
DEFAULTS = {k: _OPTIONS[k].default if k in _OPTIONS else None for k in _ORDER}
"""The config of the main job (`scoreflow train` with no arguments), in config.json's order. `num_classes` is no
option: a `--cond class` run records there the class count of its data (the network's label table depends on it)."""


# ---------------------------------------------------------------------------------------------------------------
def check_against_data(c: dict, ds: sfd.Dataset) -> None:
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
    square = len(shape) == 3 and shape[1] == shape[2]
    if c["network"] == "unet":
        if not square:
            if len(shape) == 1:
                hint = "use --network mlp, which takes vectors"
            elif len(shape) == 3:
                hint = (
                    "crop or pad them to square images; neither network takes non-square images (--network mlp "
                    "takes vectors: flatten them to (N, C*H*W) for it)"
                )
            else:
                hint = "give images as (N, C, H, W) with H = W, or vectors (N, D) with --network mlp"
            raise UsageError(
                f"--network unet needs square images (C, H, W); --data {c['data']} has examples of shape "
                f"{shape}: {hint}"
            )
        check_unet_levels(c, shape[-1])
    if c["cond"] == "class" and ds.train_labels is None:
        raise UsageError(
            f"--cond class needs labelled data; --data {c['data']} has no class labels (the built-in 'digits' and "
            "'digits-binary' have them)"
        )
    if c["network"] == "mlp" and len(shape) != 1:
        if square:
            hint = "use --network unet, which takes square images"
        else:
            hint = "flatten them to vectors (N, D); for images, cropped or padded to square, --network unet"
        raise UsageError(f"--network mlp needs vectors (D,); --data {c['data']} has examples of shape {shape}: {hint}")
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
    """The training objective `(model, batch, key)`: `batch` is the images, or `(images, labels)` for a `--cond
    class` run, whose labels are replaced by the null label `num_classes` with probability `label_dropout`."""
    if c.get("num_classes") is None:
        return _objective(c, num_levels)
    inner = _objective(c, num_levels, conditional=True)
    null, rate = c["num_classes"], c["label_dropout"]

    def with_labels(model, batch, key):
        x, labels = batch
        k_drop, k_loss = jax.random.split(key)
        return inner(model, (x, sf.label_dropout(labels, null, rate, key=k_drop)), k_loss)

    return sft.CustomGradient(with_labels) if isinstance(inner, sft.CustomGradient) else with_labels


def _objective(c: dict, num_levels: int | None, conditional: bool = False):
    def split(batch):
        return batch if conditional else (batch, None)

    if c["loss"] == "vdm":
        learned = c["schedule"] == "learned"

        def vdm(model, batch, key):
            x, cond = split(batch)
            if learned:  # VDM's variance-minimising gradient for the schedule's shape
                loss, grads = sf.vdm_loss_and_grads(
                    model, x, cond, key=key, num_levels=num_levels, variance_params=_schedule_interior
                )
                return (loss, {"bpd": loss}), grads
            loss, grads = eqx.filter_value_and_grad(
                lambda m: jnp.mean(sf.batch_vdm_vlb(m, x, cond, key=key, num_levels=num_levels).total)
            )(model)
            return (loss, {"bpd": loss}), grads

        return sft.CustomGradient(vdm)
    weighting = TABLE["weighting"][c["weighting"]]()

    def dsm(model, batch, key):
        x, cond = split(batch)
        return sf.batch_dsm_loss(model, x, cond, key=key, weighting=weighting), {}

    return dsm


def build_state(c: dict, shape: tuple[int, ...]):
    model = build_model(c, shape)
    optimiser = sft.make_optimiser(
        c["lr"], total_steps=c["steps"], warmup_steps=min(c["warmup"], c["steps"]), clip_norm=c["clip"]
    )
    state = sft.init_state(model, optimiser, key=jax.random.fold_in(jax.random.key(c["seed"]), 1))
    return state, optimiser


# ---------------------------------------------------------------------------------------------------------------
NLL_CHUNK = 4
"""Examples per compiled likelihood evaluation: any number of examples reuses one compilation (the last chunk is
padded), and example i's number does not depend on how many are evaluated."""


def sample_key(seed: int) -> jax.Array:
    """The key of the samples of a run trained with `--seed seed` (samples.png; `sample RUN` by default)."""
    return jax.random.key(seed + 1)


def eval_key(seed: int) -> jax.Array:
    """The key of the test VLB of a run trained with `--seed seed`."""
    return jax.random.fold_in(jax.random.key(seed), 2)


def nll_key(seed: int) -> jax.Array:
    """The key of the probability-flow likelihood of a run trained with `--seed seed` (in training and, by
    default, in `nll RUN`); example i of the test set uses `fold_in(nll_key(seed), i)`."""
    return jax.random.fold_in(eval_key(seed), 1)


def vlb_bpd(model, ds, c, key, advance=lambda n: None) -> float:
    """Test-set VLB in bits/dim (mean over examples and `eval_repeats` draws of t and noise)."""
    x = jnp.asarray(ds.test)

    @eqx.filter_jit
    def one(m, k):
        return jnp.mean(sf.batch_vdm_vlb(m, x, key=k, num_levels=ds.num_levels).total)

    out = []
    for r in range(c["eval_repeats"]):
        out.append(float(one(model, jax.random.fold_in(key, r))))
        advance(1)
    return float(np.mean(out))


def pf_nll(model, ds, c, n, key, advance=lambda n: None) -> dict:
    """Probability-flow likelihood of the first `n` test examples: bits/dim (quantised) or nats (continuous).

    Example i uses the key `fold_in(key, i)` (its dequantisation noise and Hutchinson probes), and examples are
    evaluated `NLL_CHUNK` at a time, so the same settings give the same number for the same examples whatever
    `n` is: `nll RUN` reproduces what training printed. `advance(k)` is called as k more examples are done.
    """
    solver = TABLE["solver"][c["solver"]]()
    divergence = TABLE["divergence"][c["divergence"]](c["probes"])
    kw = dict(solver=solver, rtol=c["rtol"], atol=c["atol"], divergence=divergence)
    if ds.num_levels is None:
        # in the default float dtype: under an outer vmap, float32 x with x64 enabled trips diffrax's stage buffers
        data = ds.test[:n].astype(jnp.result_type(float))

        def one(m, x, k):
            return -sf.log_likelihood(m, m.sde, x[None], key=k, **kw).log_prob[0]

    else:
        L = ds.num_levels
        data = ds.levels("test")[:n]
        # Level k sits at 2k/(L-1) - 1 (VDM's convention): the bin [k, k+1) maps to x = shift + scale (k + u).
        scaling = sf.AffineScaling(scale=2.0 / (L - 1), shift=-1.0 - 1.0 / (L - 1))
        dequant = TABLE["dequantisation"][c["dequantisation"]](model.sde)

        def one(m, levels, k):
            return sf.bits_per_dim(
                lambda x, kk: sf.log_likelihood(m, m.sde, x, key=kk, **kw),
                levels[None],
                num_levels=L,
                key=k,
                scaling=scaling,
                dequantisation=dequant,
            ).bits_per_dim[0]

    run = eqx.filter_jit(lambda m, xs, ks: jax.vmap(lambda x, k: one(m, x, k))(xs, ks))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    values = []
    for s in range(0, n, NLL_CHUNK):
        idx = np.minimum(np.arange(s, s + NLL_CHUNK), n - 1)
        values.append(np.asarray(run(model, jnp.asarray(data[idx]), keys[idx]))[: n - s])
        advance(min(NLL_CHUNK, n - s))
    v = np.concatenate(values).astype(np.float64)
    stderr = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else None
    if ds.num_levels is None:
        out = {"nll_nats": float(v.mean()), "nll_nats_stderr_over_examples": stderr, "examples": n}
        if ds.density is not None:
            x = jnp.asarray(data)
            out["exact_nll_nats"] = float(-jnp.mean(ds.density.log_prob(x.astype(ds.density.means.dtype))))
        return out
    return {"bpd": float(v.mean()), "bpd_stderr_over_examples": stderr, "examples": n}


def sample_labels(c: dict, n: int) -> np.ndarray | None:
    """The class labels of n samples of a `--cond class` run: 0, 1, ..., K-1, 0, 1, ... (None if unconditional)."""
    return None if c.get("num_classes") is None else np.arange(n, dtype=np.int32) % c["num_classes"]


def draw_samples(model, shape, c, n, key, cond=None) -> np.ndarray:
    """n samples with the run's sampler; `cond` (e.g. `(n,)` labels) is passed to every model call."""
    sampler = TABLE["sampler"][c["sampler"]](c["sample_steps"])
    cond = None if cond is None else jnp.asarray(cond)
    res = eqx.filter_jit(lambda m, k, cc: sf.sample(m, m.sde, k, (n, *shape), sampler=sampler, cond=cc))(
        model, key, cond
    )
    return np.asarray(res.samples)


def _pm(stderr, digits: int = 3) -> str:
    """ "+- 0.012, " or, with fewer than two examples, "no standard error, "."""
    return "no standard error, " if stderr is None else f"+- {stderr:.{digits}f}, "


def _write_plots(run, model, ds, c, records, reference, samples) -> list[str]:
    from .. import plots

    paths = [run.file("samples.png"), run.file("curves.png"), run.file("schedule.png")]
    shown = np.clip(samples, -1, 1) if ds.num_levels is not None else samples
    plots.save_samples(
        paths[0],
        shown,
        density=ds.density,
        title=f"{ds.name}: {len(samples)} samples ({c['sampler']})",
    )
    plots.save_curves(paths[1], records, reference)
    sde = model.sde
    t = np.linspace(float(sde.t0), float(sde.T), 200)
    lam = np.asarray(jax.vmap(sde.log_snr)(jnp.asarray(t)))
    init = build_model(c, ds.shape).sde
    lam0 = np.asarray(jax.vmap(init.log_snr)(jnp.asarray(t)))
    plots.save_schedule(paths[2], t, lam, lam0)
    return paths


def summary(first_line: str, ds, r: dict) -> str:
    lines = [first_line]
    if "test_vlb_bpd" in r:
        lines.append(
            f"  test VLB (VDM bound, EMA model)          {r['test_vlb_bpd']:.4f} bits/dim  ({len(ds.test)} test images)"
        )
    pf = r.get("pf")
    if pf and "bpd" in pf:
        lines.append(
            f"  probability-flow likelihood (ODE)        {pf['bpd']:.4f} bits/dim  "
            f"({_pm(pf['bpd_stderr_over_examples'])}{pf['examples']} test images)"
        )
    if pf and "nll_nats" in pf:
        ex = f", exact density {pf['exact_nll_nats']:.4f}" if "exact_nll_nats" in pf else ""
        lines.append(
            f"  probability-flow NLL (ODE)               {pf['nll_nats']:.4f} nats{ex}  "
            f"({_pm(pf['nll_nats_stderr_over_examples'])}{pf['examples']} test points)"
        )
    for name, v in r.get("baselines_bpd", {}).items():
        what = "per-pixel categorical (add-one)" if name == "categorical" else f"{name} compressor"
        lines.append(f"  baseline: {what:<31}{v:.4f} bits/dim")
    return "\n".join(lines)


def _nll_what(c: dict, ds, n: int) -> str:
    how = f"{c['divergence']} trace" if c["divergence"] == "exact" else f"Hutchinson, {c['probes']} probe(s)"
    deq = f", {c['dequantisation']} dequantisation" if ds.num_levels is not None else ""
    return f"probability-flow likelihood of {n} test example(s) ({how}, {c['solver']}, rtol={c['rtol']}{deq})"


def _sampling_what(c: dict, n: int) -> str:
    steps = "" if c["sampler"] == "pf" else f", {c['sample_steps']} steps"
    return f"drawing {n} samples ({c['sampler']}{steps}; compiling first)"


def _default(a: argparse.Namespace, c: dict, options) -> dict:
    """The run's config with the given sample/nll options put in (those not given stay as trained)."""
    return dict(c, **{o.key: getattr(a, o.key) for o in options if getattr(a, o.key) is not None})


# ---------------------------------------------------------------------------------------------------------------
class Continuous(registry.AbstractFamily):
    is_default = True
    name = "continuous"
    title = "continuous"
    help = "continuous-time score model (--sde, --loss, ...: the default job)"
    train_options = TRAIN_OPTIONS
    sample_options = SAMPLE_OPTIONS
    nll_options = NLL_OPTIONS
    model_keys = (
        "data bits network channels res_blocks attention dropout width depth parameterisation sde schedule "
        "schedule_hidden gamma_min gamma_max"
    ).split()

    def config_keys(self) -> tuple[str, ...]:
        return tuple(DEFAULTS)

    def config_from_args(self, a: argparse.Namespace) -> dict:
        c = {k: getattr(a, k, DEFAULTS[k]) for k in DEFAULTS}
        if hasattr(a, "label_dropout") and c["cond"] != "class":
            raise UsageError(f"--label-dropout {a.label_dropout} applies to --cond class only (got --cond {c['cond']})")
        return c

    def check_config(self, c: dict) -> dict:
        # runs written before --cond existed are unconditional
        c = {"cond": "none", "label_dropout": DEFAULTS["label_dropout"], "num_classes": None, **c}
        out = super().check_config(c)
        k = out["num_classes"]
        if (out["cond"] == "class") != (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise ValueError(
                f"num_classes = {k!r}: expected a positive integer for cond = 'class' and null otherwise "
                f"(cond = {out['cond']!r})"
            )
        return out

    def run_tag(self, c: dict) -> str:
        return c["loss"]

    def train(self, a: argparse.Namespace, session) -> int:
        c = session.config
        run = session.run
        intr = session.interrupts
        intr.doing = "loading the data"
        ds = load_data(c)
        check_against_data(c, ds)
        warn_if_small(ds, c)
        if c["cond"] == "class" and c["num_classes"] is None:
            c["num_classes"] = ds.num_classes
        state, optimiser = build_state(c, ds.shape)

        def config_doc():
            return {
                "config": {k: c[k] for k in DEFAULTS},
                "data": {
                    "name": ds.name,
                    "source": ds.source,
                    "shape": list(ds.shape),
                    "num_levels": ds.num_levels,
                    "n_train": len(ds.train),
                    "n_test": len(ds.test),
                },
                "parameters": count_params(state.model),
                "devices": [str(d) for d in jax.devices()],
                "versions": {"scoreflow": sf.__version__, "jax": jax.__version__},
            }

        state = session.begin(state, config_doc)
        print(
            f"run folder: {run.path}  |  data {ds.name} {ds.shape}, {len(ds.train)} train / {len(ds.test)} test  |  "
            f"{count_params(state.model)} parameters  |  {jax.device_count()} device(s)",
            file=sys.stderr,
        )
        step_fn = sft.make_train_step(
            build_objective(c, ds.num_levels), optimiser, ema_decay=c["ema_decay"], mesh=sft.make_mesh()
        )
        data = ds.train if c["num_classes"] is None else (ds.train, ds.train_labels.astype(np.int32))
        state = session.loop(state, step_fn, data)

        model = state.ema if state.ema is not None else state.model
        results = session.timing(int(state.step))
        bar = session.progress
        if ds.num_levels is not None and c["sde"] == "vp":
            what = f"evaluating the test VLB ({len(ds.test)} images x {c['eval_repeats']} draws)"
            with phase(what, total=c["eval_repeats"], unit="draws", interrupts=intr, bar=bar) as advance:
                results["test_vlb_bpd"] = vlb_bpd(model, ds, c, eval_key(c["seed"]), advance)
        if c["nll_examples"] > 0:
            n = min(c["nll_examples"], len(ds.test))
            with phase(
                "evaluating the " + _nll_what(c, ds, n), total=n, unit="examples", interrupts=intr, bar=bar
            ) as adv:
                results["pf"] = pf_nll(model, ds, c, n, nll_key(c["seed"]), adv)
        if ds.num_levels is not None:
            results["baselines_bpd"] = sfd.baselines(ds)
        with phase(_sampling_what(c, c["num_samples"]), interrupts=intr):
            samples = draw_samples(
                model, ds.shape, c, c["num_samples"], sample_key(c["seed"]), sample_labels(c, c["num_samples"])
            )
        np.save(run.file("samples.npy"), samples)
        session.wrote(run.file("samples.npy"))
        reference = {}
        if "test_vlb_bpd" in results:
            reference["test VLB"] = results["test_vlb_bpd"]
        if "baselines_bpd" in results:
            reference["categorical"] = results["baselines_bpd"]["categorical"]
        session.wrote(*_write_plots(run, model, ds, c, run.read_metrics(), reference, samples))
        results["wall_seconds"] = session.wall_seconds()
        session.wrote(run.write_json("results.json", results))
        print(summary(session.trained_line(results), ds, results))
        print(session.files_line())
        return 0

    def _load(self, run, interrupts):
        interrupts.doing = "loading the run"
        c = run.read_config()["config"]
        ds = load_data(c)
        state, _ = build_state(c, ds.shape)
        state, _ = run.restore(state, self, c)
        return c, ds, state

    def sample(self, a: argparse.Namespace, run, interrupts) -> int:
        c, ds, state = self._load(run, interrupts)
        trained_seed = c["seed"]
        c = _default(a, c, SAMPLE_OPTIONS)
        n = c["num_samples"] if a.num_samples is None else a.num_samples
        seed = trained_seed if a.seed is None else a.seed
        step = int(state.step)
        model = state.ema if state.ema is not None else state.model
        guide = None
        if getattr(a, "guide", None) is not None:
            guide = self._load_guide(a, c, ds, interrupts)
        p = guidance.plan(a, run.path, c, model, n, guide)
        name = f"samples_step{step:06d}{p.suffix}" + ("" if seed == trained_seed else f"_seed{seed}")
        stem, note = output_stem(run, a.output, name, (".png", ".npy"))
        what = _sampling_what(c, n) + (f", {p.what}" if p.what else "")
        with phase(what, interrupts=interrupts):
            samples = draw_samples(p.model, ds.shape, c, n, sample_key(seed), p.labels)
        from .. import plots

        plots.save_samples(
            stem + ".png",
            np.clip(samples, -1, 1) if ds.num_levels is not None else samples,
            density=ds.density,
            title=f"{ds.name}: {n} samples ({c['sampler']}" + (f"; {p.what}" if p.what else "") + ")",
        )
        np.save(stem + ".npy", samples)
        if note:
            print(note, file=sys.stderr)
        print(f"wrote {stem}.png and {stem}.npy ({n} samples, step {step}" + (f"; {p.what}" if p.what else "") + ")")
        if not getattr(a, "no_metrics", False):
            with phase("digit metrics (the classifier is trained once, then cached)", interrupts=interrupts):
                m = guidance.digit_metrics(ds, samples, p.labels, getattr(a, "class_label", None))
            if m is not None:
                acc = f"class accuracy {m['class_accuracy']:.3f}, " if "class_accuracy" in m else ""
                print(
                    f"{acc}Fréchet distance {m['frechet_distance']:.2f} to the {m['reference']} (classifier features)"
                )
                record = {"samples": stem + ".npy", "step": step, "seed": seed, "what": p.what, **m}
                with open(run.file("sample_metrics.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")
        return 0

    def _load_guide(self, a: argparse.Namespace, c: dict, ds, interrupts):
        """The weak model of `--guide RUN2` (at `--guide-step`, else its newest checkpoint)."""
        from .run import Run, family_name

        weak = Run(a.guide)
        cfg = weak.read_config()
        if family_name(cfg) != self.name:
            raise UsageError(
                f"--guide {a.guide!r}: a --model {family_name(cfg)} run; autoguidance needs a continuous one"
            )
        c2 = cfg["config"]
        ds2 = load_data(c2)
        guidance.check_guide(a, c, ds, c2, ds2)
        state, _ = build_state(c2, ds2.shape)
        interrupts.doing = "loading the guide run"
        if a.guide_step is None:
            state, _ = weak.restore(state, self, c2)
        else:
            path = sft.checkpoint_path(weak.checkpoints, a.guide_step)
            steps = [s for s, _ in sft.list_checkpoints(weak.checkpoints)]
            if a.guide_step not in steps:
                raise UsageError(f"--guide-step {a.guide_step}: {a.guide!r} has checkpoints of steps {steps}")
            try:
                state, _ = sft.load_checkpoint(path, state)
            except sft.CheckpointError as e:
                raise UsageError(f"--guide-step {a.guide_step}: {e}") from None
        return state.ema if state.ema is not None else state.model

    def nll(self, a: argparse.Namespace, run, interrupts) -> int:
        c, ds, state = self._load(run, interrupts)
        c = _default(a, c, NLL_OPTIONS)
        model = state.ema if state.ema is not None else state.model
        n = a.num_examples
        if n > len(ds.test):
            print(f"--num-examples {n}: the test set has {len(ds.test)} examples; using all of them", file=sys.stderr)
            n = len(ds.test)
        seed = c["seed"] if a.seed is None else a.seed
        t = time.time()
        what = "evaluating the " + _nll_what(c, ds, n)
        with phase(what, total=n, unit="examples", interrupts=interrupts, bar=not a.no_progress) as adv:
            r = pf_nll(model, ds, c, n, nll_key(seed), adv)
        r.update(
            {o.key: c[o.key] for o in NLL_OPTIONS}, seed=seed, step=int(state.step), seconds=round(time.time() - t, 1)
        )
        with open(run.file("nll.jsonl"), "a") as f:
            f.write(json.dumps(r) + "\n")
        if "bpd" in r:
            print(
                f"{r['bpd']:.4f} bits/dim ({_pm(r['bpd_stderr_over_examples'])}{r['examples']} test examples; "
                f"{c['divergence']}, {c['solver']}, rtol={c['rtol']}, atol={c['atol']}, {c['dequantisation']}; "
                f"step {r['step']})"
            )
        else:
            print(
                f"{r['nll_nats']:.4f} nats NLL ({_pm(r['nll_nats_stderr_over_examples'])}{r['examples']} test points"
                + (f"; exact density: {r['exact_nll_nats']:.4f}" if "exact_nll_nats" in r else "")
                + f"; step {r['step']})"
            )
        return 0


CONTINUOUS = registry.register(Continuous())
