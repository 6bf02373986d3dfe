"""Guided distillation on class-conditional digits: a w-conditioned U-Net student (Meng et al., 2023) against its
classifier-free-guided teacher at 2 x 64 evaluations, at 8, 4, 2 and 1 DDIM steps.

1. Teacher: a class-conditional U-Net (8x8 digits, v-parameterisation, VP cosine, label dropout 0.1), trained
   here through the library (`batch_dsm_loss`, `scoreflow.train`), EMA. Guided teacher:
   `ClassifierFreeGuidance(teacher, None, null, Constant(1 + w))` with DDIM 64 steps (2 x 64 evaluations).
2. Stage 1 (`sf.guided_distill`): one student (the teacher's U-Net in `GuidanceWeightNet`) regresses
   (1 + w) x_c - w x_u for w ~ U[0, 4].
3. Stage 2 (`sf.distill(..., w_range=(0, 4))`, one call per halving so that each student is evaluated as soon as
   it exists): progressive distillation of that student from `--start-steps` down to 1 at sampled w; its first
   teacher is the stage-1 student on that many DDIM steps.

Evaluated at w = 2 on the same prior draws and labels (i mod 10): class accuracy and the Fréchet distance (FD) on
the features of `scoreflow.metrics.digit_classifier` against a fixed set of training digits of the same size, with
a bootstrap standard deviation (the sampled set resampled), the FD to a second guided-teacher set drawn from other
prior draws ("FD to teacher": distance to the distribution the students are distilled towards; for the teacher's
own row it is the FD between two teacher sets, the noise floor at this sample size), the paired RMSE to the guided
teacher's images, and wall time per image (compile apart). Reference rows: other training digits (the data floor),
the conditional teacher without guidance (w = 0), and the stage-1 student with plain DDIM at the students' step
counts. Training cost (steps, wall incl. compilation, first and last logged loss) per stage.

    python benchmarks/bench_distill_digits.py --start-steps 16 --stage1-steps 300 --stage-steps 150 --n-eval 500
                                                          # the committed run (loaded machine)
    python benchmarks/bench_distill_digits.py --quick    # smoke run
"""

import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


C.set_threads()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import scoreflow as sf  # noqa: E402
import scoreflow.data as sfd  # noqa: E402
import scoreflow.metrics as sfm  # noqa: E402
import scoreflow.train as sft  # noqa: E402


TEACHER_DDIM = 64
W_RANGE = (0.0, 4.0)
W_EVAL = 2.0
STUDENT_STEPS = (8, 4, 2, 1)
BOOTSTRAP = 20
NUM_CLASSES = 10
DROPOUT = 0.1


def build_teacher(key):
    net = sf.UNet(8, 1, channels=(32, 64), num_res_blocks=1, attention_resolutions=(), num_classes=NUM_CLASSES, key=key)
    return sf.ScoreModel(net, sf.VPSDE(sf.CosineSchedule()), sf.VPrediction())


def train_teacher(x, y, steps, batch, cache):
    """The class-conditional teacher (EMA), trained with label dropout; cached by its settings."""
    model = build_teacher(jax.random.key(0))
    path = os.path.join(cache, f"teacher_{steps}_{batch}.eqx")
    if os.path.exists(path):
        print(f"teacher: loaded {path}", flush=True)
        return eqx.tree_deserialise_leaves(path, model), {"cached": True}
    opt = sft.make_optimiser(2e-3, total_steps=steps, warmup_steps=min(100, steps))
    state = sft.init_state(model, opt, key=jax.random.key(1))

    def loss_fn(m, b, k):
        xb, yb = b
        k_drop, k_loss = jax.random.split(k)
        yb = jnp.where(jax.random.bernoulli(k_drop, DROPOUT, yb.shape), NUM_CLASSES, yb)  # label dropout
        return sf.batch_dsm_loss(m, xb, yb, key=k_loss, weighting=sf.VWeighting()), {}

    t = time.perf_counter()
    state = sft.train_loop(
        state,
        sft.make_train_step(loss_fn, opt, ema_decay=0.995),
        (x, y),
        num_steps=steps,
        batch_size=batch,
        log_every=max(1, steps // 10),
        progress=False,
        callback=lambda s, m: print(f"  teacher step {s}: loss {m['loss']:.4f}", flush=True),
    )
    wall = time.perf_counter() - t
    os.makedirs(cache, exist_ok=True)
    eqx.tree_serialise_leaves(path, state.ema)
    return state.ema, {"cached": False, "train_steps": steps, "train_s": wall}


def main():
    ap = C.base_parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--teacher-steps", type=int, default=None, help="teacher training steps")
    ap.add_argument("--stage1-steps", type=int, default=None, help="guided stage-1 training steps")
    ap.add_argument("--stage-steps", type=int, default=None, help="optimiser steps per halving")
    ap.add_argument("--n-eval", type=int, default=None, help="images per evaluated sampler")
    ap.add_argument("--start-steps", type=int, default=16, help="DDIM steps of stage 2's first teacher")
    ap.add_argument("--lr", type=float, default=3e-4, help="learning rate of both distillation stages")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "scoreflow_bench_distill_digits"))
    a = ap.parse_args()
    t_start, load_before = time.perf_counter(), C.load_avg()
    teacher_steps = a.teacher_steps or (20 if a.quick else 1500)
    stage1_steps = a.stage1_steps or (10 if a.quick else 300)
    stage_steps = a.stage_steps or (5 if a.quick else 150)
    n = a.n_eval or (50 if a.quick else 500)
    batch = 64

    ds = sfd.load_digits()
    x, y = ds.train.astype(np.float32), ds.train_labels
    classifier = sfm.digit_classifier()
    perm = np.random.default_rng(0).permutation(len(x))
    reference, floor_set = x[perm[:n]], x[perm[n : 2 * n]]
    ref_stats = sfm.feature_statistics(sfm.classifier_features(classifier, reference))

    teacher, teacher_cost = train_teacher(x, y, teacher_steps, batch, a.cache)
    sde = teacher.sde
    null = NUM_CLASSES
    cfg = sf.ClassifierFreeGuidance(teacher, None, null, sf.Constant(1.0))

    labels = jnp.asarray(np.arange(n) % NUM_CLASSES)
    w_cond = (labels, jnp.full((n,), W_EVAL, jnp.float32))
    shape = (n, 1, 8, 8)
    x_T = jax.random.normal(jax.random.key(123), shape, jnp.float32)
    x_T_other = jax.random.normal(jax.random.key(456), shape, jnp.float32)  # the second teacher set

    def run(model, sampler, cond, prior=x_T, timed=True):
        key = jax.random.key(0)  # unused by deterministic samplers: the draws are x_T
        f = eqx.filter_jit(lambda m, xt, c: sf.sample(m, sde, key, shape, sampler, cond=c, x_T=xt).samples)
        t = time.perf_counter()
        out = np.asarray(f(model, prior, cond))
        first = time.perf_counter() - t
        if not timed:
            return out, first, None
        t = time.perf_counter()
        jax.block_until_ready(f(model, prior, cond))
        steady = time.perf_counter() - t
        return out, first, steady

    def features(images):
        return sfm.classifier_features(classifier, images)

    teacher_b: dict = {}  # the features of the second guided-teacher set, once drawn

    def metrics(images):
        f = features(images)
        out = {
            "accuracy": sfm.class_accuracy(classifier, images, np.asarray(labels)),
            "fd": sfm.frechet_distance(*sfm.feature_statistics(f), *ref_stats),
        }
        rng = np.random.default_rng(0)
        boot = [
            sfm.frechet_distance(*sfm.feature_statistics(f[rng.integers(0, len(f), len(f))]), *ref_stats)
            for _ in range(BOOTSTRAP)
        ]
        out["fd_sd"] = float(np.std(boot, ddof=1))
        if "stats" in teacher_b:
            out["fd_teacher"] = sfm.frechet_distance(*sfm.feature_statistics(f), *teacher_b["stats"])
        return out

    rows = []
    halvings: list[dict] = []
    config = {
        "command": "python benchmarks/bench_distill_digits.py " + " ".join(sys.argv[1:]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "teacher": "UNet(8, 1, channels=(32, 64), num_res_blocks=1, no attention, num_classes=10), VPrediction, "
        "VPSDE(CosineSchedule()), DSM with VWeighting, label dropout 0.1, EMA 0.995, batch 64",
        "teacher_cost": teacher_cost,
        "teacher_train_steps": teacher_steps,
        "stage1_steps": stage1_steps,
        "stage_steps": stage_steps,
        "stage2_start_steps": a.start_steps,
        "halvings": halvings,
        "lr": a.lr,
        "batch_size": batch,
        "w_range": list(W_RANGE),
        "w_eval": W_EVAL,
        "n_eval": n,
        "fd_bootstrap": BOOTSTRAP,
        "classifier": f"scoreflow.metrics.digit_classifier() (version {sfm.CLASSIFIER_VERSION})",
    }

    def write(done: bool):
        payload = C.run_record(load_before, t_start, rows)
        payload.update(config, complete=done)
        cols = [
            ("method", "method", ""),
            ("steps", "steps", "d"),
            ("evals", "evaluations", "d"),
            ("accuracy", "class accuracy", ".3f"),
            ("fd", "FD to data", ".2f"),
            ("fd_sd", "bootstrap sd", ".2f"),
            ("fd_teacher", "FD to teacher", ".2f"),
            ("rmse", "paired RMSE vs teacher", ".3f"),
            ("ms_per_image", "ms / image", ".1f"),
            ("train_steps", "train steps", "d"),
            ("train_s", "train wall s", ".0f"),
        ]
        cost = "\n\nTraining cost per stage (optimiser steps, wall s incl. compilation, first -> last logged loss): "
        cost += "; ".join(
            f"{h['stage']}: {h['train_steps']} steps, {h['train_s']:.0f} s, loss {h['first_loss']:.4g} -> "
            f"{h['final_loss']:.4g}"
            for h in halvings
        )
        cost += f"\n\nCommand: `{config['command']}`"
        if config["xla_flags"]:
            cost += f" with XLA_FLAGS=`{config['xla_flags']}`"
        cost += f"; batch {batch}, lr {a.lr}, {n} images per row, FD bootstrap over {BOOTSTRAP} resamples."
        cost += f" Wall time of the whole run: {payload['wall_s']:.0f} s."
        note = "" if done else "\n\n**Incomplete run**: the rows above are those measured before it was stopped."
        name = "distill_digits_quick" if a.quick else "distill_digits"
        title = f"Guided distillation on class-conditional digits (w = {W_EVAL})"
        C.write_results(name, payload, C.report(title, payload, cols, cost + note))

    def add(row):
        rows.append(row)
        print(C.summarise(row), flush=True)
        write(False)

    # --- reference rows: data floor, the guided teacher twice (two prior draws), the unguided teacher ---
    ref_b, _, _ = run(eqx.tree_at(lambda g: g.weight, cfg, sf.Constant(1.0 + W_EVAL)), sf.DDIM(steps=TEACHER_DDIM),
                      labels, prior=x_T_other, timed=False)  # fmt: skip
    teacher_b["stats"] = sfm.feature_statistics(features(ref_b))
    floor = {"accuracy": sfm.class_accuracy(classifier, floor_set, y[perm[n : 2 * n]])}
    floor_f = features(floor_set)
    floor["fd"] = sfm.frechet_distance(*sfm.feature_statistics(floor_f), *ref_stats)
    floor["fd_teacher"] = sfm.frechet_distance(*sfm.feature_statistics(floor_f), *teacher_b["stats"])
    add({"method": "data (other training digits)", "steps": 0, "evals": 0, **floor})

    guided = eqx.tree_at(lambda g: g.weight, cfg, sf.Constant(1.0 + W_EVAL))
    ref, first, steady = run(guided, sf.DDIM(steps=TEACHER_DDIM), labels)
    row = {"method": "guided teacher (CFG, DDIM)", "steps": TEACHER_DDIM, "evals": 2 * TEACHER_DDIM, **metrics(ref)}
    row |= {"rmse": 0.0, "ms_per_image": 1e3 * steady / n, "compile_s": first - steady}
    add(row)
    row = {"method": "guided teacher, other prior draws", "steps": TEACHER_DDIM, "evals": 2 * TEACHER_DDIM}
    add(row | {k: v for k, v in metrics(ref_b).items() if k != "fd_teacher"})

    def paired(out):
        return float(np.sqrt(np.mean((out - ref) ** 2)))

    unguided, _, _ = run(teacher, sf.DDIM(steps=TEACHER_DDIM), labels, timed=False)
    row = {"method": "conditional teacher, no guidance (w = 0)", "steps": TEACHER_DDIM, "evals": TEACHER_DDIM}
    add(row | metrics(unguided) | {"rmse": paired(unguided)})

    def stage_record(stage: str, steps: int, wall: float, losses: list[float]) -> dict:
        return {
            "stage": stage,
            "train_steps": steps,
            "train_s": wall,
            "first_loss": losses[0] if losses else float("nan"),
            "final_loss": float(np.mean(losses[-3:])) if losses else float("nan"),
            "losses": losses,
        }

    # --- stage 1 ---
    print(f"stage 1: {stage1_steps} steps, w ~ U{W_RANGE}", flush=True)
    losses: list[float] = []

    def log1(s, m):
        losses.append(m["loss"])
        print(f"  stage 1 step {s}: loss {m['loss']:.4f}", flush=True)

    stage1 = sf.guided_distill(
        cfg,
        x,
        y,
        key=jax.random.key(2),
        train_steps=stage1_steps,
        w_range=W_RANGE,
        batch_size=batch,
        learning_rate=a.lr,
        warmup_steps=min(50, stage1_steps),
        callback=log1,
    )
    halvings.append(stage_record("stage 1", stage1.train_steps, stage1.wall_s, losses))
    out, first, steady = run(stage1.student, sf.DDIM(steps=TEACHER_DDIM), w_cond)
    row = {"method": "stage-1 student (DDIM)", "steps": TEACHER_DDIM, "evals": TEACHER_DDIM, **metrics(out)}
    row |= {"rmse": paired(out), "ms_per_image": 1e3 * steady / n, "compile_s": first - steady}
    row |= {"train_steps": stage1.train_steps, "train_s": stage1.wall_s}
    add(row)

    # --- stage 2: one halving per call (the same keys and seeds as one call), each student evaluated at once ---
    print(f"stage 2: {a.start_steps} -> 1, {stage_steps} steps per halving", flush=True)
    current: sf.AbstractScoreModel = stage1.student
    steps_n = a.start_steps
    while steps_n > 1:
        losses = []

        def log2(nn, s, m, losses=losses):
            losses.append(m["loss"])
            print(f"  {nn} steps, step {s}: loss {m['loss']:.4g}", flush=True)

        (st,) = sf.distill(
            current,
            x,
            steps_n,
            steps_n // 2,
            key=jax.random.key(3),
            train_steps=stage_steps,
            batch_size=batch,
            cond=y,
            w_range=W_RANGE,
            learning_rate=a.lr,
            callback=log2,
        )
        halvings.append(stage_record(f"{steps_n} -> {st.steps}", st.train_steps, st.wall_s, losses))
        current, steps_n = st.student, st.steps
        if st.steps not in STUDENT_STEPS:
            write(False)
            continue
        out, first, steady = run(st.student, sf.DistilledDDIM(st.student), w_cond)
        row = {"method": "guided-distilled student", "steps": st.steps, "evals": st.steps, **metrics(out)}
        row |= {"rmse": paired(out), "ms_per_image": 1e3 * steady / n, "compile_s": first - steady}
        row |= {"train_steps": st.train_steps, "train_s": st.wall_s, "final_loss": st.final_loss}
        add(row)
        base, _, base_s = run(stage1.student, sf.DDIM(steps=st.steps), w_cond)
        row = {"method": "stage-1 student, plain DDIM", "steps": st.steps, "evals": st.steps, **metrics(base)}
        add(row | {"rmse": paired(base), "ms_per_image": 1e3 * base_s / n})
    write(True)


if __name__ == "__main__":
    main()
