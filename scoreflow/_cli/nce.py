"""`--model nce-prior`: a latent-variable generator x = g(z) + sigma eps whose latent prior
p_K(z) = N(z; 0, I) prod_k r_k(z) is learned by adaptive multi-stage NCE (Xiao & Han, 2022), on 2-D toys
(`--data toy:ring8`) or images (the digits).

`--stages K` is fixed when the run is created: the model holds all K log-ratio slots from the start and the
`--steps` are split into K stages of equal length (the last takes the remainder). In stage k the first k ratios
are frozen, ratio k is trained by NCE between posterior samples z | x (short-run Langevin, `--posterior-steps`) and a
pool of `--reference-size` samples of the frozen prior p_k (drawn at the start of the stage by `--prior-steps` MALA
steps from the previous pool), jointly with the generator (`train_latent_step`); the ratios after k are not used
(they hold their zero initialisation). So a checkpoint always has the same structure, and the stage of a step
follows from the step alone; the reference pool and the optimiser state travel in the checkpoint (the optimiser is
restarted at each stage, so frozen ratios do not move). `--stages 1` is single-stage NCE against N(0, I).

Optimiser: Adam (`--lr`) on the generator and the current ratio, behind global-norm clipping (`--clip`), wrapped in
`optax.apply_if_finite` (a step with a non-finite gradient is skipped). No EMA (the model is the trained one).

After training: samples x = g(z), z from `--prior-steps` MALA steps on p_K from N(0, I) (samples.png / .npy), and
the test reconstruction error (mean squared error per element, z from 100 posterior Langevin steps).
Randomness: stage k's reference pool uses `fold_in(key(seed), 10_000 + k)`, samples `fold_in(key(seed), 4)`, the
reconstruction `fold_in(key(seed), 5)`.
"""

import argparse
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

import scoreflow as sf

from .. import data as sfd, train as sft
from .._energy import latent
from ..train.state import strong_types
from . import registry
from .datasets import load_data, warn_if_small
from .options import Option, UsageError, positive_float, positive_int
from .progress import phase
from .run import Run, count_params, output_stem


TRAIN_OPTIONS = (
    Option("stages", 4, "number of NCE stages K (fixed at train time; 1 = single-stage NCE)", positive_int),
    Option("latent_dim", 16, "size of the latent vector z", positive_int),
    Option("noise_std", 0.3, "observation noise sigma of x = g(z) + sigma eps", positive_float),
    Option("ratio_width", 64, "width of each stage's log-ratio MLP (2 hidden layers)", positive_int),
    Option("posterior_steps", 20, "short-run Langevin steps (step 0.1) for z | x per training step", positive_int),
    Option("reference_size", 5000, "samples of the frozen prior in each stage's NCE reference pool", positive_int),
    Option("prior_steps", 200, "MALA steps (step 0.5) on the prior: reference pools and samples", positive_int),
)
_NCE = {o.key: o for o in TRAIN_OPTIONS}
SHARED = (
    "data",
    "bits",
    "width",
    "depth",
    "steps",
    "batch_size",
    "accumulate",
    "lr",
    "clip",
    "seed",
    "log_every",
    "checkpoint_every",
    "keep",
    "num_samples",
)
POSTERIOR_STEP = 0.1
PRIOR_STEP = 0.5
RATIO_DEPTH = 2


class StackedLogRatio(sf.AbstractLogRatio):
    """The sum of the first `active` of K stacked `MLPLogRatio`s (leading axis K): the frozen stages of a
    `NCELatentModel` as one log-ratio, so that the stage is a traced number and one compiled step serves all stages."""

    dim: int = eqx.field(static=True)
    stacked: sf.MLPLogRatio
    active: Int[Array, ""]

    def __call__(self, z: Float[Array, " dim"]) -> Float[Array, ""]:
        h = eqx.filter_vmap(lambda r: r(z))(self.stacked)
        return jnp.sum(jnp.where(jnp.arange(h.shape[0]) < self.active, h, jnp.zeros_like(h)))


class NCELatentModel(eqx.Module):
    """The checkpointed model: the generator and all K log-ratio slots, stacked on a leading axis (those of stages
    not yet reached are unused and keep their zero initialisation)."""

    generator: latent.MLPGenerator
    ratios: sf.MLPLogRatio
    noise_std: float = eqx.field(static=True)

    def prior(self, num_stages) -> sf.MultiStagePrior:
        """p_0 times the first `num_stages` ratios (an int or a traced integer)."""
        dim = self.generator.latent_dim
        return sf.MultiStagePrior(dim, (StackedLogRatio(dim, self.ratios, jnp.asarray(num_stages, jnp.int32)),))

    def slot(self, stage) -> sf.MLPLogRatio:
        arrays, static = eqx.partition(self.ratios, eqx.is_array)
        return eqx.combine(jax.tree.map(lambda a: a[stage], arrays), static)

    def latent_model(self, stage) -> latent.LatentModel:
        """The `LatentModel` of stage `stage` (0-based): ratios before it frozen, ratio `stage` trained."""
        return latent.LatentModel(self.generator, self.prior(stage), self.slot(stage), self.noise_std)

    def with_stage(self, stage, m: latent.LatentModel) -> "NCELatentModel":
        arrays, static = eqx.partition(self.ratios, eqx.is_array)
        current = eqx.filter(m.current, eqx.is_array)
        arrays = jax.tree.map(lambda a, v: a.at[stage].set(v), arrays, current)
        return NCELatentModel(m.generator, eqx.combine(arrays, static), self.noise_std)


def stage_starts(c: dict) -> list[int]:
    """The first step of each stage: `steps // stages` steps each, the last stage taking the remainder."""
    per = c["steps"] // c["stages"]
    return [k * per for k in range(c["stages"])]


def stage_of(c: dict, step: int) -> int:
    """The stage (0-based) that training step `step` (0-based) belongs to."""
    return max(k for k, s in enumerate(stage_starts(c)) if s <= step)


def active_stages(c: dict, step: int) -> int:
    """Ratios in use after `step` training steps: every stage that has started."""
    return 0 if step <= 0 else stage_of(c, step - 1) + 1


def _resolve(c: dict, ds: sfd.Dataset) -> None:
    if ds.alphabet is not None or len(ds.shape) not in (1, 3):
        raise UsageError(
            f"--model nce-prior needs vectors (toy:NAME) or images (C, H, W); --data {c['data']} has examples of "
            f"shape {ds.shape}"
        )
    if c["stages"] > c["steps"]:
        raise UsageError(f"--stages {c['stages']}: more stages than --steps {c['steps']}; expected <= --steps")
    if c["accumulate"] != 1:
        raise UsageError(f"--accumulate {c['accumulate']}: --model nce-prior trains on one batch per step; use 1")
    if c["batch_size"] % jax.device_count():
        raise UsageError(f"--batch-size {c['batch_size']}: must be divisible by the number of devices")


def build_model(c: dict, shape: tuple[int, ...]) -> NCELatentModel:
    k_gen, k_ratio = jax.random.split(jax.random.split(jax.random.key(c["seed"]))[0])
    gen = latent.MLPGenerator(c["latent_dim"], tuple(shape), c["width"], c["depth"], key=k_gen)
    keys = jax.random.split(k_ratio, c["stages"])
    ratios = eqx.filter_vmap(lambda k: sf.MLPLogRatio(c["latent_dim"], c["ratio_width"], RATIO_DEPTH, key=k))(keys)
    return NCELatentModel(gen, ratios, c["noise_std"])


def build_optimiser(c: dict, model: NCELatentModel):
    """The per-stage optimiser of `train_latent_step` and a fresh state (the same structure for every stage)."""
    adam = optax.chain(optax.clip_by_global_norm(c["clip"]), optax.adam(c["lr"]))
    return latent.init_latent_optimiser(model.latent_model(0), adam, adam)


def build_state(c: dict, shape: tuple[int, ...]) -> sft.TrainState:
    """TrainState with opt_state = (optimiser state, reference pool); the pool of stage 0 is N(0, I) samples."""
    model = strong_types(build_model(c, shape))
    _, opt_state = build_optimiser(c, model)
    dtype = jax.tree.leaves(eqx.filter(model.ratios, eqx.is_inexact_array))[0].dtype  # the pool's dtype is the prior's
    pool = jax.random.normal(_pool_key(c["seed"], 0), (c["reference_size"], c["latent_dim"]), dtype)
    return sft.TrainState(
        model=model,
        opt_state=(opt_state, pool),
        ema=None,
        step=jnp.asarray(0, jnp.int32),
        key=jax.random.fold_in(jax.random.key(c["seed"]), 1),
    )


def _pool_key(seed: int, stage: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 10_000 + stage)


@eqx.filter_jit
def _reference(prior, init, key, num_steps):
    return sf.ChainSampling(sf.MALA(PRIOR_STEP), num_steps=num_steps)(prior, init, key=key)


def make_step_fn(c: dict, optimiser):
    """`step(state, batch)` for `train_loop`: at the first step of stage k >= 1 the optimiser is restarted and the
    reference pool redrawn from the frozen prior p_k; then one `train_latent_step` of stage k."""
    starts = stage_starts(c)
    training = latent.NCEPriorTraining()

    @eqx.filter_jit
    def one(model: NCELatentModel, opt_state, pool, x, key, stage):
        m, opt_state, info = latent.train_latent_step(
            model.latent_model(stage),
            opt_state,
            x,
            pool,
            training=training,
            optimiser=optimiser,
            posterior_steps=c["posterior_steps"],
            posterior_step_size=POSTERIOR_STEP,
            key=key,
        )
        metrics = {
            "loss": info.generator_loss + info.prior_loss,
            "generator_loss": info.generator_loss,
            "prior_loss": info.prior_loss,
            "posterior_norm": info.posterior_norm,
        }
        return model.with_stage(stage, m), opt_state, metrics

    def step(state: sft.TrainState, batch):
        n = int(state.step)
        stage = stage_of(c, n)
        opt_state, pool = state.opt_state
        if stage > 0 and n == starts[stage]:
            pool, acc = _reference(state.model.prior(stage), pool, _pool_key(c["seed"], stage), c["prior_steps"])
            opt_state = optimiser.init(
                eqx.filter((state.model.generator, state.model.slot(stage)), eqx.is_inexact_array)
            )
            say_stage(stage, c, float(acc))
        model, opt_state, metrics = one(
            state.model, opt_state, pool, batch[0], jax.random.fold_in(state.key, state.step), jnp.int32(stage)
        )
        metrics["stage"] = jnp.asarray(stage + 1, jnp.float32)
        new = sft.TrainState(model, (opt_state, pool), None, state.step + 1, state.key)
        return new, metrics

    return step


def say_stage(stage: int, c: dict, acceptance: float) -> None:
    print(
        f"\nstage {stage + 1}/{c['stages']}: reference pool of {c['reference_size']} samples of the frozen prior "
        f"p_{stage} ({c['prior_steps']} MALA steps, acceptance {acceptance:.3f})",
        file=sys.stderr,
    )


def sample_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 4)


@eqx.filter_jit
def _samples(model: NCELatentModel, num_stages, num: int, num_steps: int, key) -> Float[Array, " n *data"]:
    z = latent.latent_prior_samples(
        model.prior(num_stages), num, step_size=PRIOR_STEP, num_steps=num_steps, key=key, exact_kernel=True
    )
    return jax.vmap(model.generator)(z)


def draw_samples(c: dict, model: NCELatentModel, num_stages: int, n: int, key) -> np.ndarray:
    return np.asarray(_samples(model, jnp.int32(num_stages), n, c["prior_steps"], key))


@eqx.filter_jit
def _recon(model: latent.LatentModel, x, key):
    return latent.latent_reconstruction_error(model, x, step_size=POSTERIOR_STEP, num_steps=100, key=key)


def load_run(run: str | Run):
    run = Run(run) if isinstance(run, str) else run
    cfg = run.read_config()
    c = cfg["config"]
    ds = load_data(c)
    state, _ = run.restore(build_state(c, ds.shape), NCE_FAMILY, c)
    return cfg, c, ds, state


class NCEPriorFamily(registry.AbstractFamily):
    name = "nce-prior"
    title = "NCE latent-prior generator"
    help = (
        "latent generator x = g(z) + noise with a multi-stage NCE prior N(0, I) prod r_k (--stages, --latent-dim, ...)"
    )
    train_options = TRAIN_OPTIONS
    model_keys = tuple("model data bits width depth stages latent_dim noise_std ratio_width".split())

    def config_keys(self) -> tuple[str, ...]:
        return (*SHARED, "model", *_NCE)

    def config_from_args(self, a: argparse.Namespace) -> dict:
        c = {k: getattr(a, k) for k in SHARED}
        c["model"] = self.name
        c.update({k: getattr(a, k, o.default) for k, o in _NCE.items()})
        return c

    def run_tag(self, c: dict) -> str:
        return f"nce{c['stages']}"

    def train(self, a: argparse.Namespace, session) -> int:
        c = session.config
        run = session.run
        intr = session.interrupts
        intr.doing = "loading the data"
        ds = load_data(c)
        _resolve(c, ds)
        warn_if_small(ds, c)
        state = build_state(c, ds.shape)
        optimiser, _ = build_optimiser(c, state.model)
        mesh = sft.make_mesh()
        state = sft.replicate(state, mesh)

        def config_doc():
            return {
                "config": c,
                "data": {
                    "name": ds.name,
                    "source": ds.source,
                    "shape": list(ds.shape),
                    "num_levels": ds.num_levels,
                    "n_train": len(ds.train),
                    "n_test": len(ds.test),
                },
                "stage_starts": stage_starts(c),
                "parameters": count_params(state.model),
                "devices": [str(d) for d in jax.devices()],
                "versions": {"scoreflow": sf.__version__, "jax": jax.__version__},
            }

        state = session.begin(state, config_doc)
        print(
            f"run folder: {run.path}  |  NCE latent prior, K={c['stages']} stages from steps {stage_starts(c)}, "
            f"latent {c['latent_dim']}, sigma {c['noise_std']}  |  data {ds.name} {ds.shape}, {len(ds.train)} train / "
            f"{len(ds.test)} test  |  {count_params(state.model)} parameters",
            file=sys.stderr,
        )
        step_fn = make_step_fn(c, optimiser)
        state = session.loop(state, step_fn, np.asarray(ds.train, np.float32), mesh=mesh)
        model = state.model
        step = int(state.step)
        k = active_stages(c, step)
        leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
        results = {
            **session.timing(step),
            "stages_trained": k,
            "skipped_updates": int(state.opt_state[0].total_notfinite),
            "parameters_finite": all(bool(jnp.all(jnp.isfinite(p))) for p in leaves),
        }
        with phase("test reconstruction error (100 posterior Langevin steps)", interrupts=intr):
            test = jnp.asarray(ds.test, jnp.float32)
            lm = latent.LatentModel(model.generator, model.prior(k), None, model.noise_std)
            results["test_recon_mse"] = float(_recon(lm, test, jax.random.fold_in(jax.random.key(c["seed"]), 5)))
        with phase(f"drawing {c['num_samples']} samples ({c['prior_steps']} MALA steps on p_{k})", interrupts=intr):
            samples = draw_samples(c, model, k, c["num_samples"], sample_key(c["seed"]))
        results["nan_samples"] = int((~np.isfinite(samples)).any(axis=tuple(range(1, samples.ndim))).sum())
        write_samples(run.file("samples"), samples, ds, session)
        results["wall_seconds"] = session.wall_seconds()
        session.wrote(run.write_json("results.json", results))
        print(session.trained_line(results))
        print(
            f"  stages trained {k}/{c['stages']}; test reconstruction MSE {results['test_recon_mse']:.4f} per element; "
            f"skipped updates {results['skipped_updates']}; non-finite samples {results['nan_samples']}"
        )
        print(session.files_line())
        return 0

    def sample(self, a: argparse.Namespace, run, interrupts) -> int:
        interrupts.doing = "loading the run"
        _, c, ds, state = load_run(run)
        n = c["num_samples"] if a.num_samples is None else a.num_samples
        seed = c["seed"] if a.seed is None else a.seed
        step = int(state.step)
        k = active_stages(c, step)
        name = f"samples_step{step:06d}" + ("" if seed == c["seed"] else f"_seed{seed}")
        stem, note = output_stem(run, a.output, name, (".png", ".npy"))
        with phase(f"drawing {n} samples ({c['prior_steps']} MALA steps on p_{k})", interrupts=interrupts):
            samples = draw_samples(c, state.model, k, n, sample_key(seed))
        path = write_samples(stem, samples, ds, None)
        if note:
            print(note, file=sys.stderr)
        print(f"wrote {path} and {stem}.npy ({n} samples, step {step}, {k} of {c['stages']} stages)")
        return 0

    def nll(self, a: argparse.Namespace, run, interrupts) -> int:
        raise UsageError(
            f"RUN {run.path!r} is an NCE latent-prior run: `nll` integrates the probability-flow ODE of continuous "
            "diffusion models; this run reports its test reconstruction error in results.json (`scoreflow info RUN`)"
        )

    def info_lines(self, run, c: dict) -> list[str]:
        return [f"  stages      K={c['stages']}, starting at steps {stage_starts(c)}"]


def write_samples(stem: str, samples: np.ndarray, ds: sfd.Dataset, session) -> str:
    from .. import plots

    np.save(stem + ".npy", samples)
    path = stem + ".png"
    shown = np.clip((samples + 1) / 2, 0, 1) if samples.ndim == 4 else samples
    plots.save_samples(path, shown, density=ds.density, title=f"{ds.name}: {len(samples)} NCE-prior generator samples")
    if session is not None:
        session.wrote(path, stem + ".npy")
    return path


NCE_FAMILY = registry.register(NCEPriorFamily())
