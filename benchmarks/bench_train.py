"""Training-step benchmark: scoreflow's jitted step (`scoreflow.train.make_train_step`) against a bare
hand-written equinox + optax step on the same model, objective, optimiser and batches.

Model: the main job's (VDM with a learned schedule, U-Net 32,64, eps prediction) on the 8x8 digits, batch 64,
float32. Reports compile time (first call) apart from steady-state steps/s, and peak memory (process RSS and,
where the backend reports it, device peak bytes). Steady time: blocks of `--block` steps, the runners
interleaved block by block (so a busy machine slows all alike), median over blocks. Writes
`benchmarks/results/train[_quick].json` and `.md`.

    python benchmarks/bench_train.py            # full
    python benchmarks/bench_train.py --quick    # smoke run (small U-Net, few blocks)
"""

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path


RESULTS = Path(__file__).resolve().parent / "results"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--blocks", type=int, default=None)
    p.add_argument("--block", type=int, default=10)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import scoreflow as sf
    import scoreflow.data as sfd
    import scoreflow.train as sft

    channels = (8,) if a.quick else (32, 64)
    blocks = a.blocks or (3 if a.quick else 9)
    batch = 64
    ds = sfd.load_digits()
    net = sf.UNet(8, 1, channels=channels, num_res_blocks=1, attention_resolutions=(), key=jax.random.key(0))
    model = sf.ScoreModel(net, sf.VPSDE(sf.LearnedSchedule(hidden=64, key=jax.random.key(1))), sf.EpsPrediction())
    model = sft.state.strong_types(model)

    def objective(m, x, key):
        loss, grads = sf.vdm_loss_and_grads(m, x, key=key, num_levels=17)
        return (loss, {"bpd": loss}), grads

    opt = sft.make_optimiser(2e-3, total_steps=10_000, warmup_steps=100)
    n_steps = blocks * a.block + 1
    idx = [sft.batch_indices(len(ds.train), batch, s, seed=0) for s in range(n_steps)]
    batches = [jnp.asarray(ds.train[i]) for i in idx]

    # --- scoreflow step (EMA on / off) ---
    def sf_runner(ema):
        state = sft.init_state(model, opt, key=jax.random.key(2), ema=ema)
        step = sft.make_train_step(sft.CustomGradient(objective), opt, ema_decay=0.999)
        holder = {"state": state}

        def run(i):
            holder["state"], m = step(holder["state"], batches[i][None])
            return m["loss"]

        return run

    # --- bare hand-written equinox + optax step ---
    def bare_runner():
        params = eqx.filter(model, eqx.is_inexact_array)
        holder = {"model": model, "opt_state": opt.init(params), "key": jax.random.key(2), "step": 0}

        @eqx.filter_jit
        def step(m, opt_state, x, key):
            (loss, _), grads = objective(m, x, key)
            updates, opt_state = opt.update(grads, opt_state, eqx.filter(m, eqx.is_inexact_array))
            return eqx.apply_updates(m, updates), opt_state, loss

        def run(i):
            k = jax.random.fold_in(jax.random.fold_in(holder["key"], holder["step"]), 0)
            holder["model"], holder["opt_state"], loss = step(holder["model"], holder["opt_state"], batches[i], k)
            holder["step"] += 1
            return loss

        return run

    runners = {
        "scoreflow (EMA on)": sf_runner(True),
        "scoreflow (EMA off)": sf_runner(False),
        "bare eqx+optax": bare_runner(),
    }
    compile_s = {}
    for name, run in runners.items():
        t = time.perf_counter()
        jax.block_until_ready(run(0))
        compile_s[name] = time.perf_counter() - t
    times = {name: [] for name in runners}
    for b in range(blocks):
        for name, run in runners.items():
            t = time.perf_counter()
            for i in range(1 + b * a.block, 1 + (b + 1) * a.block):
                out = run(i)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t) / a.block)
    step_s = {k: statistics.median(v) for k, v in times.items()}
    bare = step_s["bare eqx+optax"]
    dev = jax.devices()[0]
    try:
        peak_dev = (dev.memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:
        peak_dev = None
    result = {
        "model": f"VDM, LearnedSchedule(hidden=64), UNet channels={channels}, eps, digits 8x8, batch {batch}, float32",
        "parameters": int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))),
        "compile_s": compile_s,
        "step_s_median": step_s,
        "steps_per_s": {k: 1.0 / v for k, v in step_s.items()},
        "overhead_vs_bare": {k: v / bare - 1.0 for k, v in step_s.items()},
        "block_times_s": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_bytes": peak_dev,
        "device": str(dev),
        "jax": jax.__version__,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "quick": a.quick,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "train_quick" if a.quick else "train"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Training step, {result['model']} ({result['parameters']} parameters); load average "
        f"{result['load_average'][0]:.1f} on {result['cpu_count']} CPUs.",
        "",
        "| runner | compile (s) | step (ms, median) | steps/s | overhead vs bare |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in runners:
        lines.append(
            f"| {k} | {compile_s[k]:.1f} | {1000 * step_s[k]:.1f} | {1 / step_s[k]:.2f} | "
            f"{100 * result['overhead_vs_bare'][k]:+.1f}% |"
        )
    lines.append("")
    lines.append(
        f"Peak RSS {result['peak_rss_mib']:.0f} MiB (whole process, all runners); device peak bytes: {peak_dev}."
    )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
