"""`--model distilled`: a run made by `scoreflow distill RUN` from a continuous teacher run. Its student samples
with DDIM on exactly the grid it was distilled for (`DistilledDDIM`), in `steps` model evaluations; `sample RUN`
and `info RUN` work on it like on any run (it is not trained by `train`, and has no likelihood of its own).

The run folder: config.json (the distillation settings, the teacher's path, checkpoint step and config),
metrics.jsonl (one line per log point, with its `stage`), checkpoints/guided/ (stage 1 of guided distillation)
and checkpoints/steps_NNNNN/ (one folder per halving, each checkpoint recording its grid), results.json,
samples.png/.npy.
"""

import argparse
import json
import os
import sys
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoreflow as sf

from .. import train as sft
from . import continuous, registry
from .datasets import load_data
from .interrupt import Interrupted
from .options import Option, UsageError, finite_float
from .progress import phase, say
from .run import Run, check_binding, count_params, family_name, output_stem


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
        restored = teacher.restore(state, family, tc)
        assert restored is not None  # required=True raises instead
        state = restored[0]
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
    assert w is not None
    return (labels, jnp.full((n,), w, jnp.result_type(float)))


# ---------------------------------------------------------------------------------------------------------------
def _config(a: argparse.Namespace, teacher_path: str, teacher_step: int, tc: dict) -> dict:
    g = a.guidance_range
    w = a.guidance_w if a.guidance_w is not None else (None if g is None else (g[0] + g[1]) / 2)
    if g is None and a.guidance_w is not None:
        raise UsageError(f"--guidance-w {a.guidance_w} needs --guidance-range (guided distillation)")
    if g is not None and not g[0] <= w <= g[1]:
        raise UsageError(f"--guidance-w {w}: expected a value in --guidance-range {g[0]:g},{g[1]:g}")
    if a.guidance_train_steps is not None and g is None:
        raise UsageError(f"--guidance-train-steps {a.guidance_train_steps} needs --guidance-range")
    c = {
        "model": "distilled",
        "teacher": os.path.abspath(teacher_path),
        "teacher_step": teacher_step,
        "teacher_config": tc,
        "data": tc["data"],
        "seed": a.seed,
        "steps": a.steps,
        "start_steps": a.start_steps,
        "train_steps": a.train_steps,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "warmup": a.warmup,
        "checkpoint_every": a.checkpoint_every,
        "guidance_range": g,
        "guidance_train_steps": a.guidance_train_steps or a.train_steps,
        "guidance_w": w,
        "num_samples": a.num_samples,
    }
    try:
        return check(c)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("start_steps"):
            raise UsageError(
                f"--start-steps {a.start_steps} --steps {a.steps}: each halving halves the step count, so "
                "--start-steps must be --steps times a power of 2 (e.g. --steps 4 --start-steps 64)"
            ) from None
        raise UsageError(msg) from None


def distill_run(a: argparse.Namespace, interrupts) -> int:
    """`scoreflow distill` (see `distill.py`): a new distilled run, or `--resume` of one."""
    interrupts.doing = "loading the teacher"
    if a.resume:
        if a.out is None:
            raise UsageError("--resume needs --out RUN (the distilled run folder to continue)")
        out = Run(a.out)
        if not out.exists():
            raise UsageError(f"--out {a.out!r}: no config.json there, nothing to resume")
        if out.read_config()["config"].get("model") != "distilled":
            raise UsageError(f"--out {a.out!r} is not a distilled run (made by `scoreflow distill`)")
        c = read(out)
        print(f"resuming {a.out} with its saved config (other options are ignored)", file=sys.stderr)
        teacher, ds, _, _ = teacher_model(c, exact_step=True)
    else:
        if a.run is None:
            raise UsageError("RUN is required: the teacher run folder (or --resume --out OUT)")
        probe = {"teacher": a.run}
        teacher, ds, step, tc = teacher_model(probe, exact_step=False)
        c = _config(a, a.run, step, tc)
        if a.out is None:
            base = os.path.basename(os.path.normpath(a.run)) or "run"
            a.out = os.path.join("runs", f"{base}-distilled{a.steps}-{time.strftime('%Y%m%d-%H%M%S')}")
        out = Run(a.out)
        if out.exists():
            raise UsageError(
                f"--out {a.out!r}: already holds a run; pass --resume to continue it or choose another --out"
            )
    out.require_writable("--out")
    g = c["guidance_range"]
    null = null_label(teacher)
    if g is not None and null is None:
        raise UsageError(
            f"--guidance-range {g[0]:g},{g[1]:g}: the teacher {c['teacher']!r} is unconditional; guided distillation "
            "needs a class-conditional teacher trained with label dropout"
        )
    labels = None
    if null is not None:
        labels = getattr(ds, "train_labels", None)
        if labels is None:
            raise UsageError(f"the teacher is class-conditional but --data {c['data']!r} has no labels")
        labels = np.asarray(labels)
    return _distill(a, c, out, teacher, ds, labels, null, interrupts)


def _distill(a, c: dict, out: Run, teacher, ds, labels, null, interrupts) -> int:
    from .. import train as sft

    t_start = time.time()
    os.makedirs(out.checkpoints, exist_ok=True)
    for p in sft.clean_temporaries(out.checkpoints, before=t_start):
        print(f"removed {p} (left by a save that was killed)", file=sys.stderr)
    if not a.resume:
        out.write_json(
            "config.json",
            {
                "config": {k: v for k, v in c.items() if k != "teacher_config"},
                "teacher_config": c["teacher_config"],
                "data": {
                    "name": ds.name,
                    "shape": list(ds.shape),
                    "num_levels": ds.num_levels,
                    "n_train": len(ds.train),
                    "n_test": len(ds.test),
                },
                "parameters": count_params(teacher),
                "versions": {"scoreflow": sf.__version__, "jax": jax.__version__},
            },
        )
        open(out.metrics_path, "w").close()
    print(
        f"run folder: {out.path}  |  teacher {c['teacher']} (step {c['teacher_step']})  |  data {ds.name} "
        f"{ds.shape}, {len(ds.train)} train",
        file=sys.stderr,
    )
    metrics = open(out.metrics_path, "a")
    stage_name = {"now": ""}
    t_stage = {"t": time.time()}

    def log(stage: str):
        def write(step, m):
            metrics.write(
                json.dumps({"stage": stage, "step": step, **m, "time": round(time.time() - t_start, 3)}) + "\n"
            )
            metrics.flush()

        return write

    def begin(what: str):
        stage_name["now"] = what
        t_stage["t"] = time.time()
        interrupts.doing = f"compilation of {what}"
        say(f"compiling {what} (the first step; up to a minute on a CPU) ...")

    def first_step():
        interrupts.set_training(True)
        say(f"compiled in {time.time() - t_stage['t']:.1f} s; training {stage_name['now']}")

    stop = lambda: interrupts.requested is not None
    key = jax.random.key(c["seed"])
    common: dict[str, Any] = dict(
        batch_size=c["batch_size"],
        learning_rate=c["lr"],
        warmup_steps=c["warmup"],
        checkpoint_every=c["checkpoint_every"],
        seed=c["seed"],
        progress=not a.no_progress,
        should_stop=stop,
        on_first_step=first_step,
    )
    g = c["guidance_range"]
    results: dict = {"stages": []}
    x = np.asarray(ds.train)
    try:
        if g is not None:
            cfg = sf.ClassifierFreeGuidance(model=teacher, cond=None, null=null, weight=sf.Constant(1.0))  # pyright: ignore[reportCallIssue]  (sde is its model's)
            begin(f"guided stage 1 (w in [{g[0]:g}, {g[1]:g}], {c['guidance_train_steps']} steps)")
            stage1 = sf.guided_distill(
                cfg,
                x,
                labels,
                key=jax.random.fold_in(key, 1),
                train_steps=c["guidance_train_steps"],
                w_range=(g[0], g[1]),
                checkpoint_dir=out.checkpoints,
                callback=log("guided"),
                **common,
            )
            interrupts.set_training(False)
            if not stage1.finished:
                raise _stopped(interrupts, out, os.path.join(out.checkpoints, "guided"))
            say(f"  guided stage 1 done: loss {stage1.final_loss:.4g}, {stage1.wall_s:.1f} s")
            results["guided"] = {
                "train_steps": stage1.train_steps,
                "wall_s": round(stage1.wall_s, 1),
                "final_loss": stage1.final_loss,
            }
            teacher_n = stage1.student
        else:
            teacher_n = teacher

        def on_stage(n):
            begin(f"halving {2 * n} -> {n} steps ({c['train_steps']} steps)")

        stages = sf.distill(
            teacher_n,
            x,
            c["start_steps"],
            c["steps"],
            key=jax.random.fold_in(key, 2),
            train_steps=c["train_steps"],
            cond=labels,
            w_range=None if g is None else (g[0], g[1]),
            checkpoint_dir=out.checkpoints,
            callback=lambda n, step, m: log(f"steps_{n:05d}")(step, m),
            on_stage=on_stage,
            **common,
        )
    finally:
        interrupts.set_training(False)
        metrics.close()
    if not stages or stages[-1].steps != c["steps"]:
        done = stages[-1].steps if stages else 2 * c["start_steps"]
        raise _stopped(interrupts, out, stage_folder(out, done // 2))
    for s in stages:
        results["stages"].append(
            {
                "steps": s.steps,
                "teacher_steps": 2 * s.steps,
                "train_steps": s.train_steps,
                "wall_s": round(s.wall_s, 1),
                "final_loss": s.final_loss,
            }
        )
    student = stages[-1].student
    n = c["num_samples"]
    w = c["guidance_w"]
    cond = sample_cond(c, student, n, w)
    with phase(
        f"evaluating: drawing {n} samples (DistilledDDIM, {c['steps']} steps; compiling first)", interrupts=interrupts
    ):
        samples = draw(student, ds.shape, n, continuous.sample_key(c["seed"]), cond)
    # the teacher on the same prior draws: DDIM of start_steps steps (classifier-free guided at 1 + w)
    ref_model = teacher
    if g is not None:
        ref_model = sf.ClassifierFreeGuidance(model=teacher, cond=None, null=null, weight=sf.Constant(1.0 + w))  # pyright: ignore[reportCallIssue]  (sde is its model's)
    ref_cond = cond if g is None or cond is None else cond[0]
    with phase(
        f"evaluating: the teacher's DDIM {c['start_steps']} steps on the same prior draws", interrupts=interrupts
    ):
        res = jax.jit(
            lambda k, cc: sf.sample(
                ref_model, ref_model.sde, k, (n, *ds.shape), sf.DDIM(steps=c["start_steps"]), cond=cc
            )
        )(continuous.sample_key(c["seed"]), ref_cond)
        ref = np.asarray(res.samples)
    per = np.sqrt(np.mean((samples - ref).reshape(n, -1) ** 2, axis=1))
    results["paired_rmse_vs_teacher"] = float(np.sqrt(np.mean(per**2)))
    results["teacher_sampler"] = f"DDIM {c['start_steps']} steps" + ("" if g is None else f", CFG w = {w:g}")
    results["wall_seconds"] = round(time.time() - t_start, 1)
    np.save(out.file("samples.npy"), samples)
    from .. import plots

    plots.save_samples(
        out.file("samples.png"),
        np.clip(samples, -1, 1) if ds.num_levels is not None else samples,
        density=ds.density,
        title=f"{ds.name}: {n} samples ({c['steps']}-step student)",
    )
    out.write_json("results.json", results)
    train_s = sum(s["wall_s"] for s in results["stages"]) + results.get("guided", {}).get("wall_s", 0.0)
    print(
        f"distilled {c['start_steps']} -> {c['steps']} steps in {len(stages)} halving(s), {train_s:.1f} s of training"
    )
    for s in results["stages"]:
        print(
            f"  {s['teacher_steps']:>5} -> {s['steps']:<4} {s['train_steps']} steps, {s['wall_s']} s, "
            f"loss {s['final_loss']:.4g}"
        )
    print(
        f"  paired RMSE vs the teacher ({results['teacher_sampler']}, same prior draws): "
        f"{results['paired_rmse_vs_teacher']:.4f}  ({n} samples)"
    )
    print(
        f"wrote {out.config_path}, {out.metrics_path}, {out.checkpoints}/, {out.file('results.json')}, "
        f"{out.file('samples.png')}, {out.file('samples.npy')}"
    )
    return 0


def _stopped(interrupts, out: Run, where: str) -> Interrupted:
    name = interrupts.signal_name or "a stop request"
    return Interrupted(
        f"scoreflow distill: stopped by {name}; checkpoint written in {where}\n"
        f"  continue with: scoreflow distill --resume --out {out.path}",
        128 + (interrupts.requested or 2),
    )


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

    def distill(self, a: argparse.Namespace, interrupts) -> int:
        """`scoreflow distill`: make (or `--resume`) a run of this family."""
        return distill_run(a, interrupts)

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
                f"--guidance-w {w:g}: the student was distilled for w in [{g[0]:g}, {g[1]:g}] "
                f"(--guidance-range {g[0]:g},{g[1]:g}); expected a value in that range"
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
