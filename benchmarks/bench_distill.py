"""Progressive distillation on gmm2: an MLP student (3 residual blocks x 256, v-parameterisation) distilled from
128-step DDIM with the exact score down to 1 step, under VP with the cosine log-SNR schedule, float32.

Stage 0 fits the student's denoiser to the exact one (the "teacher network", x-space regression with truncated-SNR
weight, t ~ U[t0, T]); then `sf.distill` halves 128 -> 64 -> ... -> 1, the first teacher being the exact score
(`sf.AnalyticScore`) on the 128-step grid, each student starting from its teacher. Metric: paired RMSE
sqrt(mean_i ||x_i - x*_i||^2) over the same prior draws x_T, against the exact-score 128-step DDIM x*; the outlier
rate is the fraction with ||x_i - x*_i|| > 0.25 (a tenth of the ring's radius). Base DDIM with the exact score at
the same step counts is measured on the same draws. Also: training steps and wall time per stage (compilation
included), and sampling wall time per batch (compile apart).

    python benchmarks/bench_distill.py            # full (about 20 min on 2 busy cores)
    python benchmarks/bench_distill.py --quick    # smoke run
"""

import sys
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
import scoreflow.train as sft  # noqa: E402


TEACHER_STEPS = 128
TARGETS = {4: 0.03, 1: 0.06}
OUTLIER = 0.25


def main():
    ap = C.base_parser((__doc__ or "").splitlines()[0])
    ap.add_argument("--stage-steps", type=int, default=None, help="optimiser steps per halving")
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=5e-4)
    a = ap.parse_args()
    t_start, load_before = time.perf_counter(), C.load_avg()
    stage_steps = a.stage_steps or (50 if a.quick else 3000)
    pre_steps = a.pretrain_steps or (100 if a.quick else 3000)
    batch, n_eval = 256, (256 if a.quick else 4096)

    m = C.gmm2()
    sde = sf.VPSDE(sf.CosineSchedule())
    exact = sf.AnalyticScore(C.sf_mixture(m, "float32"), sde)
    data = C.sample_np(m, 65536, seed=0).astype(np.float32)
    net = sf.MLP(2, width=256, depth=3, key=jax.random.key(0))
    student = sf.ScoreModel(net, sde, sf.VPrediction())

    # --- stage 0: the teacher network, regressed on the exact denoiser ---
    weighting = sf.TruncatedSNRWeighting()

    def pre_loss(model, x, key):
        k_t, k_e = jax.random.split(key)
        t = jax.random.uniform(k_t, (x.shape[0],), x.dtype, sde.t0, sde.T)
        e = jax.random.normal(k_e, x.shape, x.dtype)

        def one(t, x, e):
            alpha, sigma = sde.alpha_sigma(t)
            z = alpha * x + sigma * e
            w = weighting.weight(sde, t) * jnp.exp(sde.log_snr(t))
            return w * jnp.sum((exact.denoise(t, z) - model.denoise(t, z)) ** 2)

        return jnp.mean(jax.vmap(one)(t, x, e)), {}

    opt = sft.make_optimiser(1e-3, total_steps=pre_steps, warmup_steps=min(100, pre_steps // 10))
    state = sft.init_state(student, opt, key=jax.random.key(1), ema=False)
    t = time.perf_counter()
    state = sft.train_loop(
        state,
        sft.make_train_step(pre_loss, opt, ema_decay=0.0),
        data,
        num_steps=pre_steps,
        batch_size=batch,
        progress=False,
    )
    jax.block_until_ready(state)
    pre_wall = time.perf_counter() - t
    student = state.model
    print(f"stage 0: {pre_steps} steps in {pre_wall:.1f} s", flush=True)

    def progress(n, step, metrics):
        if step == stage_steps:
            print(f"halving to {n} steps: loss {metrics['loss']:.4g} at step {step}", flush=True)

    # --- progressive distillation 128 -> 1 ---
    teacher = sf.Distilled(model=exact, grid=sf.DistillationGrid.of(sde, TEACHER_STEPS))
    stages = sf.distill(
        teacher,
        data,
        TEACHER_STEPS,
        1,
        key=jax.random.key(2),
        train_steps=stage_steps,
        batch_size=batch,
        student=student,
        learning_rate=a.lr,
        warmup_steps=min(100, stage_steps // 10),
        callback=progress,
    )

    # --- evaluation on the same prior draws ---
    x_T = jax.random.normal(jax.random.key(3), (n_eval, 2), jnp.float32)
    key = jax.random.key(4)

    @eqx.filter_jit
    def draw(model, sampler, x_T):
        # model and draws are arguments, not closed-over constants (XLA would constant-fold the whole sampler)
        return sf.sample(model, sde, key, (n_eval, 2), sampler, x_T=x_T).samples

    def run(model, sampler):
        out, first, steady, _ = C.timed(lambda: jax.block_until_ready(draw(model, sampler, x_T)))
        return np.asarray(out, np.float64), first, steady

    ref, _, ref_s = run(exact, sf.DDIM(steps=TEACHER_STEPS))
    net_ref, _, _ = run(student, sf.DDIM(steps=TEACHER_STEPS))

    def errors(x):
        d = np.linalg.norm(x - ref, axis=1)
        return float(np.sqrt(np.mean(d**2))), float(np.mean(d > OUTLIER))

    rows = [
        {
            "method": f"exact DDIM-{TEACHER_STEPS} (reference)",
            "steps": TEACHER_STEPS,
            "rmse": 0.0,
            "outliers": 0.0,
            "sample_s": ref_s,
        },
    ]
    r, o = errors(net_ref)
    rows.append(
        {
            "method": f"stage-0 network, DDIM-{TEACHER_STEPS}",
            "steps": TEACHER_STEPS,
            "rmse": r,
            "outliers": o,
            "train_steps": pre_steps,
            "train_s": pre_wall,
        }
    )
    for st in stages:
        out, first, steady = run(st.student, sf.DistilledDDIM(st.student))
        base, _, base_s = run(exact, sf.DDIM(steps=st.steps))
        r, o = errors(out)
        rb, ob = errors(base)
        row = {
            "method": "distilled",
            "steps": st.steps,
            "rmse": r,
            "outliers": o,
            "base_rmse": rb,
            "base_outliers": ob,
            "train_steps": st.train_steps,
            "train_s": st.wall_s,
            "final_loss": st.final_loss,
            "sample_s": steady,
            "compile_s": first - steady,
        }
        if st.steps in TARGETS:
            row["target"] = TARGETS[st.steps]
            row["met"] = r <= TARGETS[st.steps]
        rows.append(row)
        print(C.summarise(row), flush=True)

    payload = C.run_record(load_before, t_start, rows)
    payload.update(
        {
            "teacher_steps": TEACHER_STEPS,
            "stage_steps": stage_steps,
            "pretrain_steps": pre_steps,
            "batch": batch,
            "n_eval": n_eval,
            "lr": a.lr,
            "outlier_threshold": OUTLIER,
            "sde": "VPSDE(CosineSchedule())",
            "dtype": "float32",
        }
    )
    cols = [
        ("method", "method", ""),
        ("steps", "steps", "d"),
        ("rmse", "paired RMSE", ".4f"),
        ("target", "target", ".2f"),
        ("outliers", "outliers", ".4f"),
        ("base_rmse", "base DDIM RMSE", ".4f"),
        ("base_outliers", "base outliers", ".4f"),
        ("train_steps", "train steps", "d"),
        ("train_s", "train wall s", ".1f"),
        ("sample_s", f"sample {n_eval} s", ".4f"),
    ]
    name = "distill_quick" if a.quick else "distill"
    C.write_results(
        name, payload, C.report("Progressive distillation on gmm2 (VP cosine, MLP 3x256, v)", payload, cols)
    )


if __name__ == "__main__":
    main()
