"""`scoreflow distill RUN --steps N`: distil a trained continuous run into an N-step student, in a new run folder.

Progressive distillation (Salimans & Ho, 2022) halves DDIM's steps from `--start-steps` down to `--steps`, each
student starting from its teacher; with `--guidance-range LO,HI` (a class-conditional teacher) it first trains
one w-conditioned student on the classifier-free-guided pair (Meng et al., 2023, stage 1) and then halves that.
Each halving checkpoints in its own folder; Ctrl-C stops at a step boundary with a checkpoint, and
`scoreflow distill --resume --out OUT` continues. `sample OUT` and `info OUT` work on the result.
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

import scoreflow as sf

from . import continuous, distilled
from .interrupt import Interrupted
from .options import UsageError, nonneg_int, positive_float, positive_int
from .progress import phase, say
from .run import Run, count_params


def add_parser(sub) -> None:
    d = sub.add_parser(
        "distill",
        help="distil a trained run into a few-step sampler (a new run folder)",
        description="Progressive distillation of RUN's EMA model (a continuous run) into a student that samples "
        "with DDIM in --steps evaluations on the grid it was distilled for; with --guidance-range, guided "
        "distillation of a class-conditional run (one evaluation per step instead of two for classifier-free "
        "guidance). Writes config.json, metrics.jsonl, checkpoints/ (one folder per stage), results.json and "
        "samples.png to --out.",
    )
    d.add_argument("run", nargs="?", default=None, help="the teacher: a run folder written by `scoreflow train`")
    d.add_argument("--steps", type=positive_int, default=4, help="the student's DDIM steps (default: 4)")
    d.add_argument(
        "--start-steps",
        type=positive_int,
        default=64,
        help="the teacher's DDIM steps; halved down to --steps, so --steps times a power of 2 (default: 64)",
    )
    d.add_argument("--train-steps", type=positive_int, default=1000, help="optimiser steps per halving (default: 1000)")
    d.add_argument(
        "--guidance-range",
        type=distilled.parse_range,
        default=None,
        metavar="LO,HI",
        help="guided distillation of a class-conditional teacher for guidance strengths w in [LO, HI] "
        "((1 + w) x_c - w x_u; default: none)",
    )
    d.add_argument(
        "--guidance-train-steps",
        type=positive_int,
        default=None,
        help="optimiser steps of guided stage 1 (default: --train-steps)",
    )
    d.add_argument(
        "--guidance-w",
        type=float,
        default=None,
        help="w of the samples drawn at the end (default: the middle of --guidance-range)",
    )
    d.add_argument("--batch-size", type=positive_int, default=64, help="examples per step (default: 64)")
    d.add_argument("--lr", type=positive_float, default=1e-4, help="peak learning rate of Adam (default: 1e-4)")
    d.add_argument("--warmup", type=nonneg_int, default=0, help="warm-up steps per stage (default: 0)")
    d.add_argument(
        "--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints (default: 500)"
    )
    d.add_argument("--seed", type=nonneg_int, default=0, help="seed of noise and data order (default: 0)")
    d.add_argument("--num-samples", type=positive_int, default=64, help="samples drawn at the end (default: 64)")
    d.add_argument("--out", default=None, help="run folder (default: runs/<teacher>-distilled<N>-<time>)")
    d.add_argument("--resume", action="store_true", help="continue the distillation in --out with its saved config")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")


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
        return distilled.check(c)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("start_steps"):
            raise UsageError(
                f"--start-steps {a.start_steps} --steps {a.steps}: each halving halves the step count, so "
                "--start-steps must be --steps times a power of 2 (e.g. --steps 4 --start-steps 64)"
            ) from None
        raise UsageError(msg) from None


def run(a: argparse.Namespace, interrupts) -> int:
    interrupts.doing = "loading the teacher"
    if a.resume:
        if a.out is None:
            raise UsageError("--resume needs --out RUN (the distilled run folder to continue)")
        out = Run(a.out)
        if not out.exists():
            raise UsageError(f"--out {a.out!r}: no config.json there, nothing to resume")
        if out.read_config()["config"].get("model") != "distilled":
            raise UsageError(f"--out {a.out!r} is not a distilled run (made by `scoreflow distill`)")
        c = distilled.read(out)
        print(f"resuming {a.out} with its saved config (other options are ignored)", file=sys.stderr)
        teacher, ds, _, _ = distilled.teacher_model(c, exact_step=True)
    else:
        if a.run is None:
            raise UsageError("RUN is required: the teacher run folder (or --resume --out OUT)")
        probe = {"teacher": a.run}
        teacher, ds, step, tc = distilled.teacher_model(probe, exact_step=False)
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
    null = distilled.null_label(teacher)
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
    common = dict(
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
            cfg = sf.ClassifierFreeGuidance(teacher, None, null, sf.Constant(1.0))
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
        raise _stopped(interrupts, out, distilled.stage_folder(out, done // 2))
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
    cond = distilled.sample_cond(c, student, n, w)
    with phase(
        f"evaluating: drawing {n} samples (DistilledDDIM, {c['steps']} steps; compiling first)", interrupts=interrupts
    ):
        samples = distilled.draw(student, ds.shape, n, continuous.sample_key(c["seed"]), cond)
    # the teacher on the same prior draws: DDIM of start_steps steps (classifier-free guided at 1 + w)
    ref_model = teacher if g is None else sf.ClassifierFreeGuidance(teacher, None, null, sf.Constant(1.0 + w))
    ref_cond = cond if g is None else cond[0]
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
