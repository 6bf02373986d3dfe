r"""The progressive-distillation driver: halve the step count repeatedly, each student starting from its teacher.

This is an edge (it runs the training loop of `scoreflow.train`); it imports `scoreflow.train` only when called,
so that importing the pure core never pulls in the training edge.
"""

import os
import time
from collections.abc import Callable

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._custom_types import Conditioning
from .._loss import AbstractWeighting
from .._misc import check_int
from .._model import AbstractScoreModel
from .._sampler.discretisation import AbstractTimeDiscretisation, UniformTime
from .._sampler.distilled import DistillationGrid
from .distilled import Distilled
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
    - `weighting`, `discretisation`, `t0`: as in `progressive_distillation_loss`.
    - `checkpoint_dir`: if given, stage `N` checkpoints into `checkpoint_dir/steps_NNNNN/` (every
      `checkpoint_every` steps and at its end), and a call with the same arguments resumes: finished stages
      are loaded, not retrained, and an unfinished one continues from its newest checkpoint.
    - `callback(N, step, metrics)`: called at the training loop's log points.

    **Returns:** one `DistillationStage` per halving, in order (the last holds the `end_steps` student).
    """
    from ..train import init_state, make_optimiser, make_train_step, restore_latest, train_loop

    stages_n = _halvings(start_steps, end_steps)
    if isinstance(teacher, Distilled) and teacher.grid.steps != start_steps:
        raise ValueError(
            f"distill: the teacher is a Distilled model of {teacher.grid.steps} steps but start_steps={start_steps}"
        )
    if not isinstance(teacher, AbstractScoreModel):
        raise TypeError(f"distill needs `teacher` to be an AbstractScoreModel; got teacher={teacher!r}")
    sde = teacher.sde
    t0 = float(sde.t0 if t0 is None else t0)
    if callable(data):
        check_int("distill", "num_examples", num_examples, 1)
        data = data(jax.random.fold_in(key, 0), num_examples)
    batch_data = (np.asarray(data), cond)
    current = student if student is not None else (teacher.model if isinstance(teacher, Distilled) else teacher)
    out: list[DistillationStage] = []
    for n in stages_n:
        steps_n = train_steps(n) if callable(train_steps) else train_steps
        check_int("distill", "train_steps", steps_n, 1)
        grid = DistillationGrid.of(sde, n, t0, discretisation)
        frozen = teacher

        def loss_fn(model, batch, k, frozen=frozen, n=n):
            x, c = batch
            loss = progressive_distillation_loss(
                model, frozen, x, c, key=k, num_steps=n, weighting=weighting, discretisation=discretisation, t0=t0
            )
            return loss, {}

        optimiser = make_optimiser(learning_rate, total_steps=steps_n, warmup_steps=min(warmup_steps, steps_n))
        state = init_state(current, optimiser, key=jax.random.fold_in(key, n), ema=False)
        folder = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), f"steps_{n:05d}")
        if folder is not None:
            restored = restore_latest(folder, state)
            if restored is not None:
                state = restored[0]
        losses: list[float] = []

        def log(step, metrics, n=n, losses=losses):
            losses.append(metrics["loss"])
            if callback is not None:
                callback(n, step, metrics)

        start = time.perf_counter()
        state = train_loop(
            state,
            make_train_step(loss_fn, optimiser, ema_decay=0.0),
            batch_data,
            num_steps=steps_n,
            batch_size=batch_size,
            seed=seed + n,
            checkpoint_dir=folder,
            checkpoint_every=checkpoint_every,
            keep=1,
            log_every=max(1, min(100, steps_n // 10)),
            callback=log,
            progress=progress,
            checkpoint_metadata={"distill_steps": n, "teacher_steps": 2 * n},
        )
        jax.block_until_ready(state)
        wall = time.perf_counter() - start
        current = state.model
        distilled = Distilled(model=current, grid=grid)
        final = float(np.mean(losses[-3:])) if losses else float("nan")
        out.append(DistillationStage(distilled, n, steps_n, wall, final, folder))
        teacher = distilled
    return out
