r"""The progressive-distillation driver: halve the step count repeatedly, each student starting from its teacher.

This is an edge (it runs the training loop of `scoreflow.train`); it imports `scoreflow.train` only when called,
so that importing the pure core never pulls in the training edge.
"""

import math
import os
import time
from collections.abc import Callable

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._custom_types import Conditioning
from .._guidance import ClassifierFreeGuidance
from .._loss import AbstractWeighting
from .._misc import check_int
from .._model import AbstractScoreModel
from .._sampler.discretisation import AbstractTimeDiscretisation, UniformTime
from .._sampler.distilled import DistillationGrid
from .distilled import Distilled
from .guided import FROM_TEACHER, guided_distillation_loss, guided_teacher
from .network import GuidanceWeightNet
from .progressive import progressive_distillation_loss
from .weighting import TruncatedSNRWeighting


class DistillationStage(eqx.Module):
    """One halving: the `student` (a `Distilled` of `steps` steps) trained on a teacher of `2 * steps` steps for
    `train_steps` optimiser steps in `wall_s` seconds (compilation included), ending at loss `final_loss` (mean of
    the last logged values); `checkpoint` is the stage's folder, or None."""

    student: Distilled
    steps: int = eqx.field(static=True)
    train_steps: int = eqx.field(static=True)
    wall_s: float = eqx.field(static=True)
    final_loss: float = eqx.field(static=True)
    checkpoint: str | None = eqx.field(static=True)


def _halvings(start_steps: int, end_steps: int) -> list[int]:
    check_int("distill", "start_steps", start_steps, 2)
    check_int("distill", "end_steps", end_steps, 1)
    out, n = [], start_steps
    while n > end_steps and n % 2 == 0:
        n //= 2
        out.append(n)
    if n != end_steps:
        raise ValueError(
            f"distill halves the step count, so start_steps must be end_steps times a power of 2 (>= 2); got "
            f"start_steps={start_steps}, end_steps={end_steps}"
        )
    return out


def _train(
    model: AbstractScoreModel,
    loss_fn,
    batch_data,
    *,
    key: PRNGKeyArray,
    train_steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    folder: str | None,
    checkpoint_every: int,
    seed: int,
    metadata: dict,
    progress: bool,
    log,
    should_stop: Callable[[], bool] | None,
    on_first_step: Callable[[], None] | None,
):
    """One stage's Adam training (no EMA) from `model`, resumed from `folder`'s newest checkpoint if any, whose
    metadata must agree with `metadata` on its "grid" (a checkpoint of another grid is refused). Returns
    (state, wall seconds)."""
    from ..train import init_state, make_optimiser, make_train_step, restore_latest, train_loop

    optimiser = make_optimiser(learning_rate, total_steps=train_steps, warmup_steps=min(warmup_steps, train_steps))
    state = init_state(model, optimiser, key=key, ema=False)
    if folder is not None:
        restored = restore_latest(folder, state)
        if restored is not None:
            state, meta = restored
            for k in ("grid", "guidance_range"):
                if k in meta and k in metadata and meta[k] != metadata[k]:
                    raise ValueError(
                        f"distill: the checkpoint in {folder} was trained for {k} = {meta[k]}, but this call asks for "
                        f"{k} = {metadata[k]}; resume with the arguments it was started with, or use another "
                        "checkpoint_dir"
                    )
    start = time.perf_counter()
    state = train_loop(
        state,
        make_train_step(loss_fn, optimiser, ema_decay=0.0),
        batch_data,
        num_steps=train_steps,
        batch_size=batch_size,
        seed=seed,
        checkpoint_dir=folder,
        checkpoint_every=checkpoint_every,
        keep=1,
        log_every=max(1, min(100, train_steps // 10)),
        callback=log,
        progress=progress,
        checkpoint_metadata=metadata,
        should_stop=should_stop,
        on_first_step=on_first_step,
    )
    jax.block_until_ready(state)
    return state, time.perf_counter() - start


def _host_data(data, key, num_examples):
    if callable(data):
        check_int("distill", "num_examples", num_examples, 1)
        data = data(jax.random.fold_in(key, 0), num_examples)
    return np.asarray(data)


def _check_w_range(owner: str, w_range) -> tuple[float, float]:
    if not (isinstance(w_range, tuple | list) and len(w_range) == 2):
        raise ValueError(f"{owner} needs `w_range` = (w_min, w_max); got w_range={w_range!r}")
    lo, hi = (float(v) for v in w_range)
    if not (0.0 <= lo <= hi and math.isfinite(hi)):
        raise ValueError(f"{owner} needs 0 <= w_min <= w_max < inf in `w_range`; got w_range={w_range!r}")
    return lo, hi


def restore_student(folder: str | os.PathLike, like: AbstractScoreModel) -> Distilled:
    r"""The student of a finished or interrupted stage of `distill`, from its checkpoint folder (`steps_NNNNN/`),
    with the grid its checkpoint recorded: `like` is a model of the same structure (e.g. the teacher, unwrapped).
    Raises `ValueError` if the folder holds no checkpoint or the checkpoint records no grid."""
    from ..train import init_state, make_optimiser, restore_latest

    like = like.model if isinstance(like, Distilled) else like
    template = init_state(like, make_optimiser(1e-4, total_steps=1, warmup_steps=0), key=jax.random.key(0), ema=False)
    restored = restore_latest(folder, template)
    if restored is None:
        raise ValueError(f"restore_student: no checkpoint in {os.fspath(folder)!r}")
    state, meta = restored
    if "grid" not in meta:
        raise ValueError(f"restore_student: the checkpoint in {os.fspath(folder)!r} records no distillation grid")
    return Distilled(model=state.model, grid=DistillationGrid.from_dict(meta["grid"]))


def distill(
    teacher: AbstractScoreModel,
    data: Array | np.ndarray | Callable[[PRNGKeyArray, int], Array],
    start_steps: int,
    end_steps: int,
    *,
    key: PRNGKeyArray,
    train_steps: int | Callable[[int], int],
    batch_size: int = 256,
    student: AbstractScoreModel | None = None,
    cond: Conditioning = None,
    w_range: tuple[float, float] | None = None,
    learning_rate: float = 1e-4,
    warmup_steps: int = 0,
    weighting: AbstractWeighting = TruncatedSNRWeighting(),
    discretisation: AbstractTimeDiscretisation = UniformTime(),
    t0: float | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    seed: int = 0,
    num_examples: int = 65536,
    progress: bool = False,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_stage: Callable[[int], None] | None = None,
    on_first_step: Callable[[], None] | None = None,
) -> list[DistillationStage]:
    r"""Progressive distillation from `start_steps` down to `end_steps`, halving each time (Salimans & Ho, 2022,
    algorithm 2): the student of stage $k$ (`N = start_steps / 2^k` steps) starts as a copy of its teacher and
    is trained with `progressive_distillation_loss`; it then becomes the next stage's teacher.

    **Arguments:**
    - `teacher`: the model sampled with DDIM on `start_steps` steps (a `Distilled` must have that many).
    - `data`: clean training examples, shape `(num_examples, *data)` (host array), or a sampler
      `data(key, n) -> (n, *data)` from which `num_examples` examples are drawn once (key `fold_in(key, 0)`); with
      `cond`, conditioning with the same leading axis.
    - `start_steps`, `end_steps`: `start_steps = end_steps * 2^k`, `k >= 1`.
    - `key`: per stage `fold_in(key, N)` is the train state's key.
    - `train_steps`: optimiser steps per stage, an int or a function of the student's step count `N`.
    - `batch_size`, `learning_rate`, `warmup_steps`: Adam with warm-up then cosine decay (`make_optimiser`), no EMA.
    - `student`: the first stage's initial student (default: the teacher, unwrapped; it must have trainable
      parameters). Salimans & Ho use the $v$-parameterisation: pass a teacher or student built with `VPrediction()`.
    - `w_range`: guided distillation, stage 2 (Meng et al., 2023): teacher and student are $w$-conditioned
      (stage 1, `guided_distill`), `cond` holds the labels, and each example of each batch is distilled at
      conditioning `(label, w)` with a fresh $w \sim U[w_{\min}, w_{\max}]$ (`(w, w)` for one fixed $w$).
    - `weighting`, `discretisation`, `t0`: as in `progressive_distillation_loss`.
    - `checkpoint_dir`: if given, stage `N` checkpoints into `checkpoint_dir/steps_NNNNN/` (every
      `checkpoint_every` steps and at its end) with its grid in the checkpoint's metadata (`restore_student`
      reads it back), and a call with the same arguments resumes: finished stages are loaded, not retrained, an
      unfinished one continues from its newest checkpoint, and a checkpoint of another grid is refused.
    - `callback(N, step, metrics)`: called at the training loop's log points.
    - `should_stop()`: polled after every step (e.g. a Ctrl-C flag); when True the stage checkpoints and `distill`
      returns the stages finished so far (the unfinished one is resumed by the next call).
    - `on_stage(N)`: called as the stage of `N` steps starts; `on_first_step()`: after each stage's first step.

    **Returns:** one `DistillationStage` per finished halving, in order (the last holds the `end_steps` student
    unless `should_stop` ended the run early).
    """
    stages_n = _halvings(start_steps, end_steps)
    if not isinstance(teacher, AbstractScoreModel):
        raise TypeError(f"distill needs `teacher` to be an AbstractScoreModel; got teacher={teacher!r}")
    if isinstance(teacher, Distilled) and teacher.grid.steps != start_steps:
        raise ValueError(
            f"distill: the teacher is a Distilled model of {teacher.grid.steps} steps but start_steps={start_steps}"
        )
    if w_range is not None:
        w_range = _check_w_range("distill", w_range)
        if cond is None:
            raise ValueError("distill with `w_range` needs `cond`: the labels the w-conditioned models are given")
    sde = teacher.sde
    t0 = float(sde.t0 if t0 is None else t0)
    batch_data = (_host_data(data, key, num_examples), cond)
    current = student if student is not None else (teacher.model if isinstance(teacher, Distilled) else teacher)
    out: list[DistillationStage] = []
    for n in stages_n:
        steps_n = train_steps(n) if callable(train_steps) else train_steps
        check_int("distill", "train_steps", steps_n, 1)
        grid = DistillationGrid.of(sde, n, t0, discretisation)
        frozen = teacher

        def loss_fn(model, batch, k, frozen=frozen, n=n):
            x, c = batch
            if w_range is not None:
                k, k_w = jax.random.split(k)
                w = jax.random.uniform(k_w, (x.shape[0],), x.dtype, w_range[0], w_range[1])
                c = (c, w)
            loss = progressive_distillation_loss(
                model, frozen, x, c, key=k, num_steps=n, weighting=weighting, discretisation=discretisation, t0=t0
            )
            return loss, {}

        folder = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), f"steps_{n:05d}")
        losses: list[float] = []

        def log(step, metrics, n=n, losses=losses):
            losses.append(metrics["loss"])
            if callback is not None:
                callback(n, step, metrics)

        if on_stage is not None:
            on_stage(n)
        metadata = {"distill_steps": n, "teacher_steps": 2 * n, "grid": grid.as_dict()}
        if w_range is not None:
            metadata["guidance_range"] = list(w_range)
        state, wall = _train(
            current,
            loss_fn,
            batch_data,
            key=jax.random.fold_in(key, n),
            train_steps=steps_n,
            batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            folder=folder,
            checkpoint_every=checkpoint_every,
            seed=seed + n,
            metadata=metadata,
            progress=progress,
            log=log,
            should_stop=should_stop,
            on_first_step=on_first_step,
        )
        if int(state.step) < steps_n:  # stopped by should_stop: checkpointed, to be resumed
            return out
        current = state.model
        distilled = Distilled(model=current, grid=grid)
        final = float(np.mean(losses[-3:])) if losses else float("nan")
        out.append(DistillationStage(distilled, n, steps_n, wall, final, folder))
        teacher = distilled
    return out


class GuidedStage(eqx.Module):
    """Stage 1 of guided distillation: the $w$-conditioned `student` after `train_steps` optimiser steps in
    `wall_s` seconds (compilation included), final loss `final_loss`, checkpoint folder `checkpoint` (or None);
    `w_range` is the range of guidance strengths it was trained on. `finished` is False if `should_stop` ended it."""

    student: AbstractScoreModel
    w_range: tuple[float, float] = eqx.field(static=True)
    train_steps: int = eqx.field(static=True)
    wall_s: float = eqx.field(static=True)
    final_loss: float = eqx.field(static=True)
    checkpoint: str | None = eqx.field(static=True)
    finished: bool = eqx.field(static=True)


def guidance_student(teacher: AbstractScoreModel, *, key: PRNGKeyArray) -> AbstractScoreModel:
    r"""The default stage-1 student of a conditional `ScoreModel` teacher (or a `ClassifierFreeGuidance` over one):
    the same `ScoreModel` with its network wrapped in `GuidanceWeightNet`, so that it starts as the conditional
    teacher at every $w$ (Meng et al., 2023)."""
    from .._model import ScoreModel

    model = teacher.model if isinstance(teacher, ClassifierFreeGuidance) else teacher
    if not isinstance(model, ScoreModel):
        raise TypeError(
            "guided_distill builds its default student from a ScoreModel teacher (or a ClassifierFreeGuidance over "
            f"one); got {type(model).__name__}: pass student= (a w-conditioned model) instead"
        )
    return eqx.tree_at(lambda m: m.network, model, GuidanceWeightNet(model.network, key=key))


def guided_distill(
    teacher: AbstractScoreModel,
    data: Array | np.ndarray,
    cond: Conditioning,
    *,
    key: PRNGKeyArray,
    train_steps: int,
    w_range: tuple[float, float] = (0.0, 4.0),
    null: Conditioning = FROM_TEACHER,
    student: AbstractScoreModel | None = None,
    batch_size: int = 256,
    learning_rate: float = 1e-4,
    warmup_steps: int = 0,
    weighting: AbstractWeighting = TruncatedSNRWeighting(),
    t0: float | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_first_step: Callable[[], None] | None = None,
) -> GuidedStage:
    r"""Guided distillation, stage 1 (Meng et al., 2023): train one $w$-conditioned student
    $\hat x(z_t, (c, w))$ to regress the classifier-free-guided denoiser $(1 + w)\,\hat x_c - w\,\hat x_\varnothing$
    of `teacher` with $w \sim U[w_{\min}, w_{\max}]$ and $t \sim U[t_0, T]$ (`guided_distillation_loss`): one
    evaluation per step where classifier-free guidance needs two. Stage 2 is `distill(student, data, N, n,
    cond=labels, w_range=...)`, which halves its DDIM steps at sampled (or, with `w_min = w_max`, fixed) $w$.

    **Arguments:**
    - `teacher`: a `ClassifierFreeGuidance(model, None, null, weight)` (its `null` is used, its weight ignored),
      or a plain conditional model with `null` given.
    - `data`, `cond`: clean examples `(n, *data)` and their conditioning (labels), leading axis `n`.
    - `key`: the train state's key; `train_steps`: optimiser steps; `w_range`: $(w_{\min}, w_{\max})$.
    - `student`: the initial $w$-conditioned model, called with `(c, w)` (default `guidance_student(teacher)`:
      the teacher's network in a `GuidanceWeightNet`, equal to the teacher at start).
    - `batch_size`, `learning_rate`, `warmup_steps`, `weighting`, `t0`, `seed`, `progress`: as in `distill`.
    - `checkpoint_dir`: checkpoints go to `checkpoint_dir/guided/` (with `w_range` in their metadata); a second
      call resumes, and a checkpoint of another `w_range` is refused.
    - `callback(step, metrics)`, `should_stop()`, `on_first_step()`: as in `distill`.

    **Returns:** a `GuidedStage`.
    """
    w_range = _check_w_range("guided_distill", w_range)
    check_int("guided_distill", "train_steps", train_steps, 1)
    cfg = guided_teacher(teacher, null)
    if student is None:
        student = guidance_student(cfg, key=jax.random.fold_in(key, 1))
    if not isinstance(student, AbstractScoreModel):
        raise TypeError(f"guided_distill needs `student` to be an AbstractScoreModel; got student={student!r}")
    if cond is None:
        raise ValueError("guided_distill needs `cond`: the conditioning (labels) of each training example")
    lo, hi = w_range

    def loss_fn(model, batch, k):
        x, c = batch
        loss = guided_distillation_loss(model, cfg, x, c, key=k, w_min=lo, w_max=hi, weighting=weighting, t0=t0)
        return loss, {}

    losses: list[float] = []

    def log(step, metrics):
        losses.append(metrics["loss"])
        if callback is not None:
            callback(step, metrics)

    folder = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), "guided")
    state, wall = _train(
        student,
        loss_fn,
        (np.asarray(data), cond),
        key=jax.random.fold_in(key, 0),
        train_steps=train_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        folder=folder,
        checkpoint_every=checkpoint_every,
        seed=seed,
        metadata={"guidance_range": [lo, hi]},
        progress=progress,
        log=log,
        should_stop=should_stop,
        on_first_step=on_first_step,
    )
    final = float(np.mean(losses[-3:])) if losses else float("nan")
    done = int(state.step) >= train_steps
    return GuidedStage(state.model, (lo, hi), train_steps, wall, final, folder, done)
