"""`--model recovery-ebm`: diffusion recovery likelihood (Gao et al., 2021), a chain of T conditional EBMs trained with
short-run Langevin from the Gaussian tether, on 2-D toys (`--data toy:ring8`) or images (the digits).

Network: `EnergyMLP` (width x depth) for vectors, `ConvEnergy` (width channels) for images; `--spectral-norm`
normalises their weights. Optimiser: Adam (beta1 0.5) behind global-norm clipping and a linear warm-up, wrapped in
`optax.apply_if_finite` (a non-finite gradient skips the update; the count is logged as `skipped`). The metrics lines
carry the energy gap g(y+) - g(y-) of every level drawn in the batch (`gap0`, `gap1`, ...).

After training, from the EMA model: samples by progressive sampling from noise (samples.png / .npy), the
energy landscape (energy.png: the level-0 density on a grid with the samples for 2-D data; the energies of every
level along a path between two test images for images), and the normalised level-0 density: log Z by tempered SMC
with its standard error, the mean test log-likelihood (2-D: next to the exact one) or test bits/dim from the density
times the bin volume (images; an estimate, not a bound).

Randomness: samples use `split(fold_in(key(seed), 4), num_samples)`, the SMC `fold_in(key(seed), 5)`.
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
from .options import Option, UsageError, positive_float, positive_int
from .progress import phase
from .run import Run, count_params, output_stem


TRAIN_OPTIONS = (
    Option(
        "levels",
        6,
        "number of EBM levels T (the paper's schedule; 6 is the released model, 30+ longer chains)",
        positive_int,
    ),
    Option("langevin_steps", 30, "Langevin steps per level (training negatives and sampling)", positive_int),
    Option(
        "step_b",
        0.3,
        "Langevin step as a fraction b of the tether's width, s_t = b sigma_{t+1}, in (0, 1)",
        positive_float,
    ),
    Option("spectral_norm", False, "spectral normalisation of the energy network's weights", switch=True),
    Option("smc_particles", 1000, "particles of the SMC estimate of log Z after training", positive_int),
)
_EBM = {o.key: o for o in TRAIN_OPTIONS}
SHARED = (
    "data",
    "bits",
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


def _resolve(c: dict, ds: sfd.Dataset) -> None:
    if not 0 < c["step_b"] < 1:
        raise UsageError(f"--step-b {c['step_b']}: must lie in (0, 1) (a fraction of the tether's width)")
    if c["levels"] < 2 or 2 * (c["levels"] - 1) > 1000:
        raise UsageError(f"--levels {c['levels']}: the paper's schedule needs 2 <= T <= 501")
    if ds.alphabet is not None or len(ds.shape) not in (1, 3):
        raise UsageError(
            f"--model recovery-ebm needs vectors (toy:NAME) or images (C, H, W); --data {c['data']} has examples of "
            f"shape {ds.shape}"
        )
    if c["batch_size"] % jax.device_count():
        raise UsageError(f"--batch-size {c['batch_size']}: must be divisible by the number of devices")


def build_model(c: dict, shape: tuple[int, ...]) -> sf.RecoveryEBM:
    k = jax.random.split(jax.random.key(c["seed"]))[0]
    if len(shape) == 1:
        net = sf.EnergyMLP(shape[0], c["width"], c["depth"], spectral_norm=c["spectral_norm"], key=k)
    else:
        if shape[1] != shape[2]:
            raise UsageError(f"--model recovery-ebm needs square images; got {shape}")
        net = sf.ConvEnergy(shape[0], shape[1], c["width"], spectral_norm=c["spectral_norm"], key=k)
    return sf.RecoveryEBM(
        net, sf.RecoverySchedule.paper(c["levels"]), sf.RelativeStepSize(c["step_b"]), c["langevin_steps"]
    )


def build_state(c: dict, shape: tuple[int, ...]):
    model = build_model(c, shape)
    optimiser = sf.recovery_optimiser(c["lr"], warmup_steps=min(c["warmup"], c["steps"]), clip_norm=c["clip"])
    state = sft.init_state(model, optimiser, key=jax.random.fold_in(jax.random.key(c["seed"]), 1))
    return state, optimiser


def objective(model, x, key):
    loss, info = sf.recovery_loss(model, x, key=key)
    gaps = jnp.where(info.count > 0, info.gap, 0.0)
    aux = {f"gap{t}": gaps[t] for t in range(model.num_levels)}
    aux["finite_negatives"] = info.finite_negatives.astype(loss.dtype)
    return loss, aux


def sample_key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), 4)


@eqx.filter_jit
def _sample_batch(model, shape, keys):
    return jax.vmap(lambda k: sf.recovery_sample(model, shape, key=k, dtype=jnp.float32)[0])(keys)


def draw_samples(model, shape, n: int, key: jax.Array) -> np.ndarray:
    keys = jax.random.split(key, n)
    return np.concatenate([np.asarray(_sample_batch(model, tuple(shape), keys[i : i + 500])) for i in range(0, n, 500)])


def level0_log_prob(model):
    a = model.schedule.scale(0)
    return lambda v: -model(0, a.astype(v.dtype) * v)  # in v's dtype (float32 runs under x64: one dtype in MALA)


def save_landscape(path: str, model, samples: np.ndarray, title: str = "", test=None) -> None:
    """2-D: the level-0 density exp(-E) normalised on a grid, with `samples`; images: the energy of every level along
    the straight path between two `test` images."""
    from .. import plots

    plt = plots._pyplot()
    samples = np.asarray(samples)
    if samples.ndim == 2 and samples.shape[1] == 2:
        lim = 3.5
        g = np.linspace(-lim, lim, 300)
        pts = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
        lp = np.array(jax.jit(jax.vmap(level0_log_prob(model)))(pts), np.float64).reshape(300, 300)
        lp -= lp.max()
        fig, axes = plt.subplots(1, 2, figsize=(10, 5))
        axes[0].imshow(np.exp(lp), origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
        axes[0].set_title("level-0 density exp(-E) (unnormalised)")
        axes[1].contour(g, g, lp, levels=np.linspace(-12, 0, 13), linewidths=0.6)
        ok = np.all(np.isfinite(samples), axis=1)
        axes[1].scatter(samples[ok, 0], samples[ok, 1], s=1, c="k", alpha=0.4)
        axes[1].set_xlim(-lim, lim)
        axes[1].set_ylim(-lim, lim)
        axes[1].set_title("log density contours and samples")
        for ax in axes:
            ax.set_aspect("equal")
    else:
        x0, x1 = (np.asarray(test[0]), np.asarray(test[1])) if test is not None else (samples[0], samples[1])
        lam = np.linspace(0, 1, 41)
        path_pts = jnp.asarray(np.stack([(1 - u) * x0 + u * x1 for u in lam]), jnp.float32)
        fig, ax = plt.subplots(figsize=(7, 4))
        for t in range(model.num_levels):
            a = model.schedule.scale(t)
            e = np.asarray(jax.jit(jax.vmap(lambda v, t=t, a=a: model(t, a * v)))(path_pts))
            ax.plot(lam, e - e[0], label=f"level {t}", lw=1)
        ax.set_xlabel("interpolation between two test images")
        ax.set_ylabel("E_t - E_t(start)")
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def density_eval(c: dict, model, ds: sfd.Dataset) -> dict:
    """log Z of the level-0 energy by SMC, and the test log-likelihood (2-D) or bits/dim (images)."""
    x = jnp.asarray(ds.test, jnp.float32)
    shape = ds.shape
    mean = jnp.asarray(np.mean(ds.train, axis=0), jnp.float32)
    std = float(np.std(ds.train)) * 1.5
    lp = level0_log_prob(model)
    run = jax.jit(
        lambda k: sf.smc_log_normaliser(
            lp,
            base_mean=mean,
            base_std=std,
            key=k,
            kernel=sf.MALA(0.1 * std),
            num_particles=c["smc_particles"],
            num_repeats=4,
        )
    )
    res = run(jax.random.fold_in(jax.random.key(c["seed"]), 5))
    ll = np.asarray(jax.jit(jax.vmap(lp))(x), np.float64) - float(res.log_z)
    out = {
        "log_z_smc": float(res.log_z),
        "log_z_stderr": float(res.stderr),
        "test_loglik": float(np.mean(ll)),
        "test_loglik_stderr_over_examples": float(np.std(ll, ddof=1) / math.sqrt(len(ll))),
    }
    if ds.density is not None:
        out["test_loglik_exact"] = float(np.mean(np.asarray(ds.density.log_prob(jnp.asarray(ds.test, jnp.float32)))))
    if ds.num_levels is not None and len(shape) == 3:
        dim = int(np.prod(shape))
        width = 2.0 / (ds.num_levels - 1)  # the data's bins in [-1, 1]
        out["test_bpd_density"] = float(-(np.mean(ll) + dim * math.log(width)) / (dim * math.log(2)))
        out["test_bpd_stderr"] = float(
            math.sqrt(out["test_loglik_stderr_over_examples"] ** 2 + out["log_z_stderr"] ** 2) / (dim * math.log(2))
        )
    return out


def load_run(run: str | Run):
    run = Run(run) if isinstance(run, str) else run
    cfg = run.read_config()
    c = cfg["config"]
    ds = load_data(c)
    state, _ = build_state(c, ds.shape)
    state, _ = run.restore(state, RECOVERY_FAMILY, c)
    return cfg, c, ds, state


class RecoveryEBMFamily(registry.AbstractFamily):
    name = "recovery-ebm"
    title = "recovery-likelihood EBM"
    help = "diffusion recovery likelihood: T conditional EBMs with short-run Langevin (--levels, --step-b, ...)"
    train_options = TRAIN_OPTIONS
    model_keys = tuple("model data bits width depth levels langevin_steps step_b spectral_norm".split())

    def config_keys(self) -> tuple[str, ...]:
        return (*SHARED, "model", *_EBM)

    def config_from_args(self, a: argparse.Namespace) -> dict:
        c = {k: getattr(a, k) for k in SHARED}
        c["model"] = self.name
        c.update({k: getattr(a, k, o.default) for k, o in _EBM.items()})
        return c

    def run_tag(self, c: dict) -> str:
        return f"ebm{c['levels']}"

    def train(self, a: argparse.Namespace, session) -> int:
        c = session.config
        run = session.run
        intr = session.interrupts
        intr.doing = "loading the data"
        ds = load_data(c)
        _resolve(c, ds)
        warn_if_small(ds, c)
        state, optimiser = build_state(c, ds.shape)
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
                "schedule": {"alphas": [float(v) for v in state.model.schedule.alphas]},
                "parameters": count_params(state.model.network),
                "devices": [str(d) for d in jax.devices()],
                "versions": {"scoreflow": sf.__version__, "jax": jax.__version__},
            }

        state = session.begin(state, config_doc)
        print(
            f"run folder: {run.path}  |  recovery EBM, T={c['levels']} levels, {c['langevin_steps']} Langevin steps, "
            f"b={c['step_b']}  |  data {ds.name} {ds.shape}, {len(ds.train)} train / {len(ds.test)} test  |  "
            f"{count_params(state.model.network)} parameters",
            file=sys.stderr,
        )
        step_fn = sft.make_train_step(objective, optimiser, ema_decay=c["ema_decay"], mesh=mesh)
        state = session.loop(state, step_fn, np.asarray(ds.train, np.float32), mesh=mesh)
        model = state.ema if state.ema is not None else state.model
        skipped = int(state.opt_state.total_notfinite)
        leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
        results = {
            **session.timing(int(state.step)),
            "skipped_updates": skipped,
            "parameters_finite": all(bool(jnp.all(jnp.isfinite(p))) for p in leaves),
        }
        with phase(
            f"drawing {c['num_samples']} samples ({c['levels']} levels x {c['langevin_steps']} Langevin steps)",
            interrupts=intr,
        ):
            samples = draw_samples(model, ds.shape, c["num_samples"], sample_key(c["seed"]))
        results["nan_samples"] = int((~np.isfinite(samples)).any(axis=tuple(range(1, samples.ndim))).sum())
        write_samples(run, run.file("samples"), samples, ds, session)
        save_landscape(
            run.file("energy.png"), model, samples, f"{ds.name}: recovery EBM, step {int(state.step)}", test=ds.test[:2]
        )
        session.wrote(run.file("energy.png"))
        with phase(f"estimating log Z by tempered SMC ({c['smc_particles']} particles x 4 runs)", interrupts=intr):
            results.update(density_eval(c, model, ds))
        results["wall_seconds"] = session.wall_seconds()
        session.wrote(run.write_json("results.json", results))
        print(summary(session.trained_line(results), results))
        print(session.files_line())
        return 0

    def sample(self, a: argparse.Namespace, run, interrupts) -> int:
        interrupts.doing = "loading the run"
        _, c, ds, state = load_run(run)
        model = state.ema if state.ema is not None else state.model
        n = c["num_samples"] if a.num_samples is None else a.num_samples
        seed = c["seed"] if a.seed is None else a.seed
        step = int(state.step)
        name = f"samples_step{step:06d}" + ("" if seed == c["seed"] else f"_seed{seed}")
        stem, note = output_stem(run, a.output, name, (".png", ".npy"))
        with phase(
            f"drawing {n} samples ({c['levels']} levels x {c['langevin_steps']} Langevin steps)", interrupts=interrupts
        ):
            samples = draw_samples(model, ds.shape, n, sample_key(seed))
        path = write_samples(run, stem, samples, ds, None)
        if note:
            print(note, file=sys.stderr)
        print(f"wrote {path} and {stem}.npy ({n} samples, step {step})")
        return 0

    def nll(self, a: argparse.Namespace, run, interrupts) -> int:
        raise UsageError(
            f"RUN {run.path!r} is a recovery-likelihood EBM run: `nll` integrates the probability-flow ODE of "
            "continuous diffusion models; this run reports its normalised density (log Z by SMC, test log-likelihood "
            "or bits/dim) in results.json (`scoreflow info RUN`)"
        )


def write_samples(run, stem: str, samples: np.ndarray, ds: sfd.Dataset, session) -> str:
    from .. import plots

    np.save(stem + ".npy", samples)
    path = stem + ".png"
    shown = np.clip((samples + 1) / 2, 0, 1) if samples.ndim == 4 else samples
    plots.save_samples(path, shown, density=ds.density, title=f"{ds.name}: {len(samples)} recovery-EBM samples")
    if session is not None:
        session.wrote(path, stem + ".npy")
    return path


def summary(first_line: str, r: dict) -> str:
    lines = [
        first_line,
        f"  log Z (level 0, SMC) {r['log_z_smc']:.4f} +- {r['log_z_stderr']:.4f}; skipped updates "
        f"{r['skipped_updates']}; non-finite samples {r['nan_samples']}",
        f"  test log-likelihood {r['test_loglik']:.4f} nats/example (+- {r['test_loglik_stderr_over_examples']:.4f})"
        + (f"; exact density {r['test_loglik_exact']:.4f}" if "test_loglik_exact" in r else ""),
    ]
    if "test_bpd_density" in r:
        lines.append(
            f"  test bits/dim from the normalised density x bin volume {r['test_bpd_density']:.4f} "
            f"(+- {r['test_bpd_stderr']:.4f}; an estimate, not a bound)"
        )
    return "\n".join(lines)


RECOVERY_FAMILY = registry.register(RecoveryEBMFamily())
