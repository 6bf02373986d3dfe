"""The thin loop: data order and keys are functions of the step, so a resumed run is bit-identical."""

import os
import re
import sys
import warnings
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh
from jaxtyping import PyTree

from .checkpoint import CheckpointError, _read_only, clean_temporaries, load_checkpoint, save_checkpoint
from .sharding import local_slice, make_mesh, replicate, shard_batch
from .state import TrainState


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the examples of batch `step`: positions `[step*B, (step+1)*B)` of an endless stream of
    epochs, epoch `e` being the permutation drawn from `numpy.random.default_rng([seed, e])`."""
    if num_examples < 1 or batch_size < 1 or step < 0:
        raise ValueError(f"need num_examples, batch_size >= 1 and step >= 0; got {num_examples}, {batch_size}, {step}")
    pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(pos, num_examples)
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(num_examples)
        sel = epochs == e
        out[sel] = perm[offsets[sel]]
    return out


_CKPT = re.compile(r"^step_(\d+)\.ckpt$")


def checkpoint_path(folder: str | os.PathLike, step: int) -> str:
    return os.path.join(os.fspath(folder), f"step_{step:08d}.ckpt")


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, str]]:
    """(step, path) of every checkpoint in `folder`, oldest first."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, n)) for n in os.listdir(folder) if (m := _CKPT.match(n))]
    return sorted(found)


def save_state(folder: str | os.PathLike, state: TrainState, *, keep: int = 3, metadata: dict | None = None) -> str:
    """Save `state` as `folder/step_NNNNNNNN.ckpt` (atomically) and delete all but the newest `keep`.

    Read-only checkpoints are never deleted (nor replaced); temporaries of dead writers are removed
    (`clean_temporaries`)."""
    if keep < 1:
        raise ValueError(f"`keep` must be >= 1; got {keep}")
    step = int(state.step)
    path = checkpoint_path(folder, step)
    if jax.process_index() == 0:
        clean_temporaries(folder)
        save_checkpoint(path, state, {"step": step, **(metadata or {})})
        for _, old in list_checkpoints(folder)[:-keep]:
            if not _read_only(old):
                os.unlink(old)
    return path


def restore_latest(folder: str | os.PathLike, like: TrainState) -> tuple[TrainState, dict] | None:
    """The newest checkpoint in `folder` that loads, into the structure of `like`; None if there is none.

    A newest file that fails verification is reported (warning naming the file and the problem) and the
    previous one is tried, since an atomic save can only leave a bad file through outside damage.
    """
    errors = []
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return load_checkpoint(path, like)
        except CheckpointError as e:
            errors.append(str(e))
            warnings.warn(f"skipping unusable checkpoint: {e}", stacklevel=2)
    if errors:
        raise CheckpointError("no usable checkpoint in " + os.fspath(folder) + ": " + "; ".join(errors))
    return None


def train_loop(
    state: TrainState,
    step_fn: Callable[[TrainState, PyTree], tuple[TrainState, dict]],
    data: PyTree,
    *,
    num_steps: int,
    batch_size: int,
    accumulate: int = 1,
    seed: int = 0,
    mesh: Mesh | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    keep: int = 3,
    log_every: int = 10,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
    checkpoint_metadata: dict | Callable[[int], dict] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_first_step: Callable[[], None] | None = None,
) -> TrainState:
    """Run `step_fn` from `state.step` up to `num_steps`, on batches drawn by `batch_indices`.

    `data` is a pytree of host arrays with examples on the first axis. Each step takes `accumulate`
    micro-batches of `batch_size` examples (leaves shaped `(accumulate, batch_size, ...)`), sharded over the
    `data` axis of `mesh` (default: all devices). Every `log_every` steps the metrics are fetched, shown on
    the progress bar and passed to `callback(step, metrics)`; every `checkpoint_every` steps and at the end
    the state is saved to `checkpoint_dir` (if given), with `checkpoint_metadata` (a dict, or a function of the
    step returning one) in its header. Returns the final state.

    `on_first_step()` is called once the first step has returned (i.e. after its compilation), before the
    progress bar appears. `should_stop()` is polled after every step: when it returns True the state is saved
    (if `checkpoint_dir` is given) and returned early, with `state.step < num_steps`.
    """
    if num_steps < 0 or batch_size < 1 or accumulate < 1 or log_every < 1 or checkpoint_every < 1:
        raise ValueError(
            f"need num_steps >= 0 and batch_size, accumulate, log_every, checkpoint_every >= 1; got {num_steps}, "
            f"{batch_size}, {accumulate}, {log_every}, {checkpoint_every}"
        )
    mesh = make_mesh() if mesh is None else mesh
    n = jax.tree.leaves(data)[0].shape[0]
    rows = local_slice(batch_size, mesh)
    state = replicate(state, mesh)
    start = int(state.step)
    bar = None

    def save(step):
        meta = checkpoint_metadata(step) if callable(checkpoint_metadata) else checkpoint_metadata
        save_state(checkpoint_dir, state, keep=keep, metadata=meta)

    try:
        for step in range(start, num_steps):
            idx = batch_indices(n, batch_size * accumulate, step, seed).reshape(accumulate, batch_size)[:, rows]
            batch = shard_batch(jax.tree.map(lambda a, i=idx: a[i], data), mesh, batch_axis=1)
            state, metrics = step_fn(state, batch)
            done = step + 1
            if step == start:
                if on_first_step is not None:
                    on_first_step()
                if progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=num_steps, initial=start, file=sys.stderr, dynamic_ncols=True, desc="train")
            if done % log_every == 0 or done == num_steps:
                m = {k: float(v) for k, v in metrics.items()}
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in m.items() if k != "grad_norm"}, refresh=False)
                if callback is not None:
                    callback(done, m)
            if bar is not None:
                bar.update(1)
            saved = done % checkpoint_every == 0 or done == num_steps
            if checkpoint_dir is not None and saved:
                save(done)
            if should_stop is not None and done < num_steps and should_stop():
                if checkpoint_dir is not None and not saved:
                    save(done)
                break
    finally:
        if bar is not None:
            bar.close()
    return state
