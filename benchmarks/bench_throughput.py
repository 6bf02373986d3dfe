"""P3: sampler throughput, scoreflow against a hand-written jitted loop and PyTorch, same weights, same threads.

Problem (shared/bench/PROBLEMS.md): MLP 65 -> 256 -> 256 -> 64 with SiLU (input = x concatenated with the
time input), batch 4096, 50 Euler steps of the VP probability-flow ODE
$dx/dt = -\\tfrac12\\beta(t)(x + s_\\theta(t, x))$ on the uniform grid from T = 1 to t0 = 1e-5, starting from
N(0, I) noise drawn inside the timed call. The same float32 weights (NumPy seed 0) in every framework.

Runners (each in its own process, 2 threads):
- `jax-handwritten`: one `jax.jit` of a `lax.fori_loop` over the 50 steps on the batched MLP.
- `scoreflow`: `sf.sample(ScoreModel(mlp, VPSDE(LinearSchedule()), ScorePrediction()), ...,
  sampler=ProbabilityFlow(solver=diffrax.Euler(), steps=50))` under `eqx.filter_jit` (the network sees
  c_noise = -log-SNR / 8 instead of t: same cost).
- `torch-eager`: the same loop in PyTorch under `no_grad`; `torch-compile`: its step function through
  `torch.compile` (first call reported apart).

Reported: samples/s from the median of the steady repeats; first call (compile) time apart; scoreflow's
overhead over the hand-written loop = t_scoreflow / t_handwritten - 1 measured in the same run.

Run: `python benchmarks/bench_throughput.py [--quick]` with the peers' environment (see benchmarks/README.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common as C  # noqa: E402


C.set_threads()

import numpy as np  # noqa: E402


BATCH, STEPS, D, H = 4096, 50, 64, 256
BATCH_QUICK = 512
T0 = 1e-5


def weights() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(D + 1, H), (H, H), (H, D)]
    out = []
    for fan_in, fan_out in shapes:
        out.append((rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32))
        out.append((0.01 * rng.standard_normal(fan_out)).astype(np.float32))
    return out


def grid() -> np.ndarray:
    return (1.0 + np.arange(STEPS + 1) / STEPS * (T0 - 1.0)).astype(np.float32)


def run_jax_handwritten(repeats):
    import jax
    import jax.numpy as jnp

    w1, b1, w2, b2, w3, b3 = [jnp.asarray(w) for w in weights()]
    ts = jnp.asarray(grid())

    def mlp(x, c):
        h = jnp.concatenate([x, jnp.broadcast_to(c, (x.shape[0], 1))], axis=1)
        h = jax.nn.silu(h @ w1 + b1)
        h = jax.nn.silu(h @ w2 + b2)
        return h @ w3 + b3

    @jax.jit
    def run(key):
        x = jax.random.normal(key, (BATCH, D), jnp.float32)

        def body(i, x):
            t, dt = ts[i], ts[i + 1] - ts[i]
            beta = 0.1 + 19.9 * t
            return x + dt * (-0.5 * beta) * (x + mlp(x, t))

        return jax.lax.fori_loop(0, STEPS, body, x)

    key = jax.random.key(0)
    out, first, steady, reps = C.timed(lambda: jax.block_until_ready(run(key)), repeats=repeats, slow_s=1e9)
    return [
        {
            "framework": "jax-handwritten",
            "first_s": first,
            "steady_s": steady,
            "repeats": reps,
            "samples_per_s": BATCH / steady,
            "checksum": float(np.mean(np.abs(np.asarray(out)))),
        }
    ]


def run_scoreflow(repeats):
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import scoreflow as sf

    w1, b1, w2, b2, w3, b3 = [jnp.asarray(w) for w in weights()]

    class MLP(eqx.Module):
        w1: jax.Array
        b1: jax.Array
        w2: jax.Array
        b2: jax.Array
        w3: jax.Array
        b3: jax.Array

        def __call__(self, c_noise, x, cond=None, *, key=None):  # one example
            h = jnp.concatenate([x, jnp.reshape(c_noise, (1,)).astype(x.dtype)])
            h = jax.nn.silu(h @ self.w1 + self.b1)
            h = jax.nn.silu(h @ self.w2 + self.b2)
            return h @ self.w3 + self.b3

    sde = sf.VPSDE(sf.LinearSchedule())
    model = sf.ScoreModel(MLP(w1, b1, w2, b2, w3, b3), sde, sf.ScorePrediction())
    rows = []
    for name, sampler in [
        (
            "ProbabilityFlow(Euler, steps=50)",
            sf.ProbabilityFlow(solver=diffrax.Euler(), steps=STEPS),
        ),
        (
            "PredictorCorrector(EulerMaruyama, NoCorrector, 50) (stochastic)",
            sf.PredictorCorrector(sf.EulerMaruyama(), sf.NoCorrector(), steps=STEPS),
        ),
    ]:

        @eqx.filter_jit
        def run(key, sampler=sampler):
            return sf.sample(model, sde, key, (BATCH, D), sampler=sampler).samples

        key = jax.random.key(0)
        out, first, steady, reps = C.timed(
            lambda run=run, key=key: jax.block_until_ready(run(key)), repeats=repeats, slow_s=1e9
        )
        rows.append(
            {
                "framework": "scoreflow",
                "variant": name,
                "first_s": first,
                "steady_s": steady,
                "repeats": reps,
                "samples_per_s": BATCH / steady,
                "checksum": float(np.mean(np.abs(np.asarray(out)))),
            }
        )
    return rows


def run_torch(repeats, compiled: bool):
    import torch

    C.torch_threads()
    w1, b1, w2, b2, w3, b3 = [torch.tensor(w) for w in weights()]
    ts = [float(t) for t in grid()]
    silu = torch.nn.functional.silu

    def step(x, t: float, dt: float):
        c = torch.full((x.shape[0], 1), t)
        h = torch.cat([x, c], dim=1)
        h = silu(h @ w1 + b1)
        h = silu(h @ w2 + b2)
        s = h @ w3 + b3
        beta = 0.1 + 19.9 * t
        return x + dt * (-0.5 * beta) * (x + s)

    if compiled:
        step = torch.compile(step, dynamic=False)

    def run():
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            x = torch.randn(BATCH, D, generator=g)
            for i in range(STEPS):
                x = step(x, ts[i], ts[i + 1] - ts[i])
        return x

    out, first, steady, reps = C.timed(run, repeats=repeats, slow_s=1e9)
    return [
        {
            "framework": "torch-compile" if compiled else "torch-eager",
            "first_s": first,
            "steady_s": steady,
            "repeats": reps,
            "samples_per_s": BATCH / steady,
            "checksum": float(out.abs().mean()),
        }
    ]


def worker(args: list[str]) -> None:
    global BATCH
    runner, quick = args[0], args[1] == "quick"
    repeats = 1 if quick else 5
    if quick:
        BATCH = BATCH_QUICK
    fn = {
        "jax-handwritten": lambda: run_jax_handwritten(repeats),
        "scoreflow": lambda: run_scoreflow(repeats),
        "torch-eager": lambda: run_torch(repeats, False),
        "torch-compile": lambda: run_torch(repeats, True),
    }[runner]
    C.emit(fn())


def main() -> None:
    ap = C.base_parser(__doc__)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    q = "quick" if args.quick else "full"
    t = time.perf_counter()
    load = C.load_avg()
    runners = ["jax-handwritten", "scoreflow", "torch-eager"] + ([] if args.quick else ["torch-compile"])
    # Interleave rounds so that a change in machine load hits every runner alike.
    rounds = 1
    rows = []
    for r in range(rounds):
        for row in C.run_isolated(__file__, [[name, q] for name in runners]):
            row["round"] = r
            rows.append(row)
    good = [r for r in rows if "error" not in r]
    hand = {r["round"]: r["steady_s"] for r in good if r["framework"] == "jax-handwritten"}
    for r in good:
        if r["round"] in hand:
            r["overhead_vs_handwritten"] = r["steady_s"] / hand[r["round"]] - 1.0
    name = "throughput_quick" if args.quick else "throughput"
    payload = {
        "problem": "P3",
        "batch": BATCH_QUICK if args.quick else BATCH,
        "steps": STEPS,
        **C.run_record(load, t, rows),
    }
    cols = [
        ("round", "round", ""),
        ("framework", "runner", ""),
        ("variant", "variant", ""),
        ("samples_per_s", "samples/s", ".0f"),
        ("steady_s", "steady s (median)", ".4f"),
        ("repeats", "repeats", ""),
        ("first_s", "first call s", ".2f"),
        ("overhead_vs_handwritten", "time vs hand-written - 1", "+.1%"),
    ]
    title = f"P3 throughput ({q} run): MLP 65-256-256-64, batch {payload['batch']}, {STEPS} Euler steps"
    table = C.report(title, payload, cols)
    C.write_results(name, payload, table)


if __name__ == "__main__":
    main()
