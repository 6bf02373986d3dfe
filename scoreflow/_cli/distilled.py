"""`--model distilled`: a run made by `scoreflow distill RUN` from a continuous teacher run. Its student samples
with DDIM on exactly the grid it was distilled for (`DistilledDDIM`), in `steps` model evaluations; `sample RUN`
and `info RUN` work on it like on any run (it is not trained by `train`, and has no likelihood of its own).

The run folder: config.json (the distillation settings, the teacher's path, checkpoint step and config),
metrics.jsonl (one line per log point, with its `stage`), checkpoints/guided/ (stage 1 of guided distillation)
and checkpoints/steps_NNNNN/ (one folder per halving, each checkpoint recording its grid), results.json,
samples.png/.npy.
"""

import argparse
import math
import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoreflow as sf

from .. import train as sft
from . import continuous, registry
from .datasets import load_data
from .options import Option, UsageError, finite_float, shown
from .progress import phase
from .run import Run, check_binding, family_name, output_stem


SAMPLE_OPTIONS = (
    Option(
        "guidance_w",
        None,
        "guidance strength w of a guided-distilled student ((1 + w) x_c - w x_u, within the range it was distilled "
        "for)",
        finite_float,
        default_text="the middle of its range",
    ),
)

KEYS = (
    "model teacher teacher_step data seed steps start_steps train_steps batch_size lr warmup "
    "checkpoint_every guidance_range guidance_train_steps guidance_w num_samples"
).split()


def _int(c: dict, k: str, low: int) -> int:
    v = c.get(k)
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
        raise ValueError(f"{k} = {v!r}: expected an integer >= {low}")
    return v


def read(run: Run) -> dict:
    """A distilled run's config with the teacher's config (config.json's "teacher_config") as `teacher_config`."""
    cfg = run.read_config()
    if not isinstance(cfg.get("teacher_config"), dict):
        raise UsageError(f'{run.config_path}: expected a "teacher_config" object (as `scoreflow distill` writes)')
    return dict(cfg["config"], teacher_config=cfg["teacher_config"])


def check(c: dict) -> dict:
    """A distilled run's config, checked key by key (`ValueError` naming the key)."""
    missing = [k for k in KEYS if k not in c]
    if missing:
        raise ValueError(f"{missing[0]} is missing")
    for k, low in (("teacher_step", 0), ("seed", 0), ("steps", 1), ("start_steps", 2), ("train_steps", 1)):
        _int(c, k, low)
    for k in ("batch_size", "checkpoint_every", "guidance_train_steps", "num_samples"):
        _int(c, k, 1)
    _int(c, "warmup", 0)
    if not isinstance(c["teacher"], str):
        raise ValueError(f"teacher = {c['teacher']!r}: expected the teacher run's path")
    if not (isinstance(c["lr"], int | float) and c["lr"] > 0):
        raise ValueError(f"lr = {c['lr']!r}: expected a positive number")
    n, s = c["start_steps"], c["steps"]
    if s >= n or n % s or (n // s) & (n // s - 1):
        raise ValueError(f"start_steps = {n}, steps = {s}: expected start_steps = steps * 2^k with k >= 1")
    g = c["guidance_range"]
    if g is not None:
        if not (
            isinstance(g, list) and len(g) == 2 and all(isinstance(v, int | float) for v in g) and 0 <= g[0] <= g[1]
        ):
            raise ValueError(f"guidance_range = {g!r}: expected null or [w_min, w_max] with 0 <= w_min <= w_max")
        w = c["guidance_w"]
        if not (isinstance(w, int | float) and g[0] <= w <= g[1]):
            raise ValueError(f"guidance_w = {w!r}: expected a number in guidance_range {g}")
    return dict(c)


def parse_range(s: str) -> list[float]:
    """`--guidance-range LO,HI`: 0 <= LO <= HI, finite."""
    try:
        lo, hi = (float(p) for p in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers, e.g. 0,4), got {s!r}") from None
    if not (0.0 <= lo <= hi and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 <= LO <= HI < inf, got {s!r}")
    return [lo, hi]


# ---------------------------------------------------------------------------------------------------------------
def teacher_model(c: dict, *, exact_step: bool):
    """(teacher model (EMA), its dataset, its step) of the teacher run `c["teacher"]`: the newest checkpoint, or
    with `exact_step` the one of step `c["teacher_step"]` (what a resumed distillation was started from)."""
    teacher = Run(c["teacher"])
    cfg = teacher.read_config()
    if family_name(cfg) != "continuous":
        raise UsageError(
            f"RUN {c['teacher']!r} is a --model {family_name(cfg)} run; `distill` distils continuous-time models "
            "(DDIM teachers) only"
        )
    tc = cfg["config"]
    ds = load_data(tc)
    state, _ = continuous.build_state(tc, ds.shape)
    family = registry.get("continuous")
    if exact_step:
        path = sft.checkpoint_path(teacher.checkpoints, c["teacher_step"])
        if not os.path.exists(path):
            raise UsageError(
                f"the teacher's checkpoint of step {c['teacher_step']} ({path}) is gone; this distillation started "
                "from it and cannot resume from another"
            )
        meta = sft.read_header(path)["metadata"]
        check_binding(teacher, family, tc, meta)
        state, _ = sft.load_checkpoint(path, state)
    else:
        state, _ = teacher.restore(state, family, tc)
    model = state.ema if state.ema is not None else state.model
    return model, ds, int(state.step), tc


def null_label(model) -> int | None:
    """The null class label of a class-conditional teacher's network (label dropout), None if unconditional."""
    net = getattr(model, "network", None)
    net = net.net if isinstance(net, sf.GuidanceWeightNet) else net
    label = getattr(net, "label", None)
    return None if label is None else int(label.num_classes)


def labels_for(n: int, num_classes: int) -> np.ndarray:
    """Sample labels: 0, 1, ..., num_classes - 1, 0, 1, ... (a grid of rows of each class)."""
    return np.arange(n) % num_classes


def student_like(c: dict, shape: tuple[int, ...]):
    """A model of the final student's structure (its weights are then loaded): the teacher's network, wrapped in
    `GuidanceWeightNet` for guided distillation (the wrapper's key does not matter: its weights are loaded)."""
    tc = c["teacher_config"]
    model = continuous.build_model(tc, shape)
    if c["guidance_range"] is not None:
        return sf.guidance_student(model, key=jax.random.key(0))
    return model


def stage_folder(run: Run, n: int) -> str:
    return os.path.join(run.checkpoints, f"steps_{n:05d}")


def load_student(run: Run, c: dict, shape: tuple[int, ...]) -> sf.Distilled:
    """The `steps`-step student with the grid its checkpoint recorded, checked against the grid of the teacher's
    SDE (a student of another grid is refused, naming both)."""
    folder = stage_folder(run, c["steps"])
    if not sft.list_checkpoints(folder):
        raise UsageError(
            f"RUN {run.path!r}: no checkpoint of the {c['steps']}-step student in {folder} (the distillation has "
            f"not reached it: continue with scoreflow distill --resume --out {run.path})"
        )
    like = student_like(c, shape)
    try:
        student = sf.restore_student(folder, like)
    except (ValueError, sft.CheckpointError) as e:
        raise UsageError(f"RUN {run.path!r}: {e}") from None
    want = sf.DistillationGrid.of(like.sde, c["steps"])
    if student.grid != want:
        raise UsageError(
            f"{folder}: the student was distilled for the grid {student.grid.times}, but this run's teacher SDE gives "
            f"{want.times}; the checkpoint does not belong to this run"
        )
    return student


def draw(student: sf.Distilled, shape, n: int, key, cond) -> np.ndarray:
    """n samples of the student with `DistilledDDIM` on its grid."""
    sampler = sf.DistilledDDIM(student)
    res = eqx.filter_jit(lambda m, k, cc: sf.sample(m, m.sde, k, (n, *shape), sampler, cond=cc))(student, key, cond)
    return np.asarray(res.samples)


def sample_cond(c: dict, student, n: int, w: float | None):
    """The conditioning of n samples: None (unconditional), labels, or (labels, w)."""
    num_classes = null_label(student.model)
    if num_classes is None:
        return None
    labels = jnp.asarray(labels_for(n, num_classes))
    if c["guidance_range"] is None:
        return labels
    return (labels, jnp.full((n,), w, jnp.result_type(float)))


# ---------------------------------------------------------------------------------------------------------------
class DistilledFamily(registry.AbstractFamily):
    name = "distilled"
    title = "distilled"
    help = "a few-step student made by `scoreflow distill RUN` (not trained by `train`)"
    sample_options = SAMPLE_OPTIONS
    model_keys = ("teacher", "steps", "start_steps", "guidance_range")

    def config_keys(self) -> tuple[str, ...]:
        return tuple(KEYS)

    def check_config(self, c: dict) -> dict:
        return check(c)

    def config_from_args(self, a: argparse.Namespace) -> dict:
        raise UsageError("--model distilled runs are made by `scoreflow distill RUN --steps N`, not by `train`")

    def run_tag(self, c: dict) -> str:
        return f"distilled{c['steps']}"

    def train(self, a: argparse.Namespace, session) -> int:
        raise UsageError("--model distilled runs are made by `scoreflow distill RUN --steps N`, not by `train`")

    def nll(self, a: argparse.Namespace, run, interrupts) -> int:
        raise UsageError(
            f"RUN {run.path!r} is a distilled student: it is a DDIM sampler on its grid only and has no likelihood of "
            "its own; evaluate its teacher with scoreflow nll TEACHER"
        )

    def info_lines(self, run: Run, c: dict) -> list[str]:
        """Lines for `info RUN`: the teacher and the checkpoints of each stage."""
        lines = [f"  teacher     {c['teacher']} (step {c['teacher_step']})"]
        stages = ["guided"] if c["guidance_range"] is not None else []
        n = c["start_steps"]
        while n > c["steps"]:
            n //= 2
            stages.append(f"steps_{n:05d}")
        for s in stages:
            ck = sft.list_checkpoints(os.path.join(run.checkpoints, s))
            lines.append(f"  stage {s:<12} checkpoints {[k for k, _ in ck]}")
        return lines

    def sample(self, a: argparse.Namespace, run, interrupts) -> int:
        interrupts.doing = "loading the run"
        c = read(run)
        ds = load_data(c["teacher_config"])
        student = load_student(run, c, ds.shape)
        n = c["num_samples"] if a.num_samples is None else a.num_samples
        seed = c["seed"] if a.seed is None else a.seed
        w = c["guidance_w"] if a.guidance_w is None else a.guidance_w
        g = c["guidance_range"]
        if g is None and a.guidance_w is not None:
            raise UsageError(f"--guidance-w {a.guidance_w}: RUN {run.path!r} was not distilled with guidance")
        if g is not None and not g[0] <= w <= g[1]:
            raise UsageError(
                f"--guidance-w {w}: the student was distilled for w in [{shown(g[0])}, {shown(g[1])}] "
                f"(--guidance-range {shown(g)}); expected a value in that range"
            )
        name = f"samples_{c['steps']}steps" + ("" if seed == c["seed"] else f"_seed{seed}")
        name += "" if g is None or w == c["guidance_w"] else f"_w{w:g}"
        stem, note = output_stem(run, a.output, name, (".png", ".npy"))
        what = f"drawing {n} samples (DistilledDDIM, {c['steps']} steps" + (f", w = {w:g}" if g else "") + ")"
        with phase(what + "; compiling first", interrupts=interrupts):
            samples = draw(student, ds.shape, n, continuous.sample_key(seed), sample_cond(c, student, n, w))
        from .. import plots

        plots.save_samples(
            stem + ".png",
            np.clip(samples, -1, 1) if ds.num_levels is not None else samples,
            density=ds.density,
            title=f"{ds.name}: {n} samples ({c['steps']}-step student)",
        )
        np.save(stem + ".npy", samples)
        if note:
            print(note, file=sys.stderr)
        print(f"wrote {stem}.png and {stem}.npy ({n} samples, {c['steps']} steps)")
        return 0


DISTILLED = registry.register(DistilledFamily())
