"""Shared pieces of the side-by-side benchmarks: problems with exact answers, thread setup, timing, output.

The problems are those of `shared/bench/PROBLEMS.md`:

* data `gmm2` (d = 2, K = 8 on a circle) and `gmm64` (d = 64, K = 4), isotropic per component;
* processes `vp` (beta(t) = 0.1 + 19.9 t on [0, 1]) and `edm` (alpha = 1, sigma = t on [0.002, 80]).

Under $x_t = a(t) x_0 + \\sigma(t)\\epsilon$ the marginal is $p_t = \\sum_k w_k N(a\\mu_k, (a^2 s_k^2 + \\sigma^2) I)$,
so log-density, score and denoiser are closed form. Every framework (scoreflow, plain diffrax, scipy, torch) gets
the same closed-form isotropic score, written here once per array library, so that wall times compare solvers
and not score implementations. Exact log-densities are computed in float64 NumPy.

Thread counts: call `set_threads()` before importing jax or torch; every runner runs in its own process
(`run_isolated`) so that one framework's thread pool cannot slow another's timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


RESULTS = Path(__file__).resolve().parent / "results"
NUM_THREADS = 2
REPEATS = 3  # steady-state repeats (median); --quick workers set 1


def set_threads(n: int = NUM_THREADS) -> None:
    """Make every framework use `n` threads. Must run before jax / torch are imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()


def torch_threads(n: int = NUM_THREADS) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


# --------------------------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mixture:
    """An isotropic-per-component Gaussian mixture, in float64 NumPy."""

    name: str
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    stds: np.ndarray  # (K,)

    @property
    def dim(self) -> int:
        return self.means.shape[1]


def gmm2() -> Mixture:
    k = np.arange(8)
    means = 2.0 * np.stack([np.cos(2 * np.pi * k / 8), np.sin(2 * np.pi * k / 8)], axis=1)
    stds = np.array([0.15, 0.2, 0.25, 0.3, 0.15, 0.2, 0.25, 0.3])
    w = (k + 1.0) / np.sum(k + 1.0)
    return Mixture("gmm2", w, means, stds)


def gmm64() -> Mixture:
    means = np.random.default_rng(0).standard_normal((4, 64))
    return Mixture("gmm64", np.array([0.1, 0.2, 0.3, 0.4]), means, np.array([0.3, 0.5, 0.7, 1.0]))


MIXTURES = {"gmm2": gmm2, "gmm64": gmm64}


@dataclass(frozen=True)
class Process:
    """Closed forms of a process (float64 NumPy), independent of scoreflow: the peers use these."""

    name: str
    t0: float
    t1: float
    prior_std: float

    def alpha_sigma(self, t):
        t = np.asarray(t, np.float64)
        if self.name == "vp":
            b = 0.1 * t + 0.5 * 19.9 * t**2
            return np.exp(-0.5 * b), np.sqrt(-np.expm1(-b))
        return np.ones_like(t), t

    def f_g2(self, t):
        """Drift coefficient f(t) and squared diffusion g(t)^2."""
        t = np.asarray(t, np.float64)
        if self.name == "vp":
            beta = 0.1 + 19.9 * t
            return -0.5 * beta, beta
        return np.zeros_like(t), 2.0 * t


PROCESSES = {
    "vp": Process("vp", 1e-5, 1.0, 1.0),
    "edm": Process("edm", 0.002, 80.0, 80.0),
}


def sf_sde(process: str):
    """The scoreflow SDE of a process: sf.VPSDE(sf.LinearSchedule()) or sf.EDMSDE()."""
    import scoreflow as sf

    return sf.VPSDE(sf.LinearSchedule()) if process == "vp" else sf.EDMSDE()


def sf_mixture(m: Mixture, dtype="float32"):
    """The problem as an `sf.GaussianMixture` (full covariances s_k^2 I)."""
    import jax.numpy as jnp

    import scoreflow as sf

    d = m.dim
    covs = np.stack([s**2 * np.eye(d) for s in m.stds])
    return sf.GaussianMixture(jnp.asarray(m.weights, dtype), jnp.asarray(m.means, dtype), jnp.asarray(covs, dtype))


# ---- exact answers (float64 NumPy) ----


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def log_prob_np(m: Mixture, a: float, sig: float, x: np.ndarray) -> np.ndarray:
    """Exact log p_t(x) of the perturbed mixture with mean scale `a` and noise std `sig`, float64."""
    x = np.asarray(x, np.float64)
    var = a**2 * m.stds**2 + sig**2  # (K,)
    d = m.dim
    sq = np.sum((x[:, None, :] - a * m.means[None]) ** 2, axis=-1)  # (N, K)
    comp = np.log(m.weights) - 0.5 * sq / var - 0.5 * d * np.log(2 * np.pi * var)
    return _logsumexp(comp, axis=1)


def sample_np(m: Mixture, n: int, seed: int) -> np.ndarray:
    """n exact samples of p_0, float64."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(m.weights), size=n, p=m.weights)
    return m.means[comp] + m.stds[comp, None] * rng.standard_normal((n, m.dim))


def sample_marginal_np(m: Mixture, p: Process, t: float, n: int, seed: int) -> np.ndarray:
    a, sig = p.alpha_sigma(t)
    x0 = sample_np(m, n, seed)
    return a * x0 + sig * np.random.default_rng(seed + 10_000).standard_normal(x0.shape)


class SlicedW2:
    """Sliced Wasserstein-2 to a fixed reference set `y`: sqrt of the mean over random unit projections of the
    mean squared difference of the sorted projections (equal sample sizes). The reference's sorted projections
    are computed once, so scoring many sample sets against one reference costs one projection and sort each."""

    def __init__(self, y: np.ndarray, num_projections: int = 256, seed: int = 0):
        y = np.asarray(y, np.float64)
        u = np.random.default_rng(seed).standard_normal((y.shape[1], num_projections))
        self.u = u / np.linalg.norm(u, axis=0, keepdims=True)
        self.shape = y.shape
        self.sorted_ref = np.sort(y @ self.u, axis=0)

    def __call__(self, x: np.ndarray) -> float:
        x = np.asarray(x, np.float64)
        if x.shape != self.shape:
            raise ValueError(f"sliced_w2 needs equal shapes; got {x.shape} and {self.shape}")
        if not np.all(np.isfinite(x)):
            return float("nan")
        return float(np.sqrt(np.mean((np.sort(x @ self.u, axis=0) - self.sorted_ref) ** 2)))


def sliced_w2(x: np.ndarray, y: np.ndarray, num_projections: int = 256, seed: int = 0) -> float:
    """`SlicedW2(y, num_projections, seed)(x)`."""
    return SlicedW2(y, num_projections, seed)(x)


# ---- the same isotropic score in each array library ----


def jax_iso_score(m: Mixture, dtype="float32"):
    """`score(a, sig, x)` for one example x (d,) as a jax function (closed form, O(K d))."""
    import jax
    import jax.numpy as jnp

    w = jnp.asarray(np.log(m.weights), dtype)
    mu = jnp.asarray(m.means, dtype)
    s2 = jnp.asarray(m.stds**2, dtype)
    d = m.dim

    def score(a, sig, x):
        var = a**2 * s2 + sig**2  # (K,)
        diff = x[None, :] - a * mu  # (K, d)
        logits = w - 0.5 * jnp.sum(diff**2, axis=-1) / var - 0.5 * d * jnp.log(var)
        r = jax.nn.softmax(logits)
        return -jnp.einsum("k,kd->d", r / var, diff)

    return score


def jax_process(p: Process):
    """(alpha_sigma(t), f_g2(t)) in jnp, closed form (for the plain-diffrax peer)."""
    import jax.numpy as jnp

    if p.name == "vp":

        def alpha_sigma(t):
            b = 0.1 * t + 0.5 * 19.9 * t**2
            return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))

        def f_g2(t):
            beta = 0.1 + 19.9 * t
            return -0.5 * beta, beta

    else:

        def alpha_sigma(t):
            return jnp.ones_like(t), t

        def f_g2(t):
            return jnp.zeros_like(t), 2.0 * t

    return alpha_sigma, f_g2


def torch_iso_score(m: Mixture, dtype=None):
    """`score(a, sig, x)` for a batch x (N, d) in torch (a, sig python floats or 0-d tensors)."""
    import torch

    dtype = dtype or torch.float32
    w = torch.tensor(np.log(m.weights), dtype=dtype)
    mu = torch.tensor(m.means, dtype=dtype)
    s2 = torch.tensor(m.stds**2, dtype=dtype)
    d = m.dim

    def score(a, sig, x):
        var = a**2 * s2 + sig**2  # (K,)
        diff = x[:, None, :] - a * mu[None]  # (N, K, d)
        logits = w - 0.5 * (diff**2).sum(-1) / var - 0.5 * d * torch.log(var)
        r = torch.softmax(logits, dim=-1)
        return -torch.einsum("nk,nkd->nd", r / var, diff)

    return score


def make_sf_model(m: Mixture, process: str, dtype="float32"):
    """A scoreflow score model (AbstractScoreModel) with the closed-form isotropic score of the problem.

    Same values as `sf.AnalyticScore(sf_mixture(m), sde)` but O(K d) per call instead of Cholesky solves,
    so that scoreflow and the peers evaluate the same score function.
    """
    import equinox as eqx
    import jax.numpy as jnp

    import scoreflow as sf

    score = jax_iso_score(m, dtype)

    class IsoMixtureScore(sf.AbstractScoreModel):
        sde: sf.AbstractSDE
        fn: Any = eqx.field(static=True)

        def __call__(self, t, x, cond=None, *, key=None):
            a, sig = self.sde.alpha_sigma(jnp.asarray(t, dtype))
            return self.fn(a.astype(dtype), sig.astype(dtype), x)

    return IsoMixtureScore(sf_sde(process), score)


# --------------------------------------------------------------------------------------------------------------
# Timing, versions, isolation, output
# --------------------------------------------------------------------------------------------------------------


def timed(fn, repeats: int | None = None, slow_s: float = 5.0):
    """Run `fn()` once (first call: compile + run) then up to `repeats` more times.

    Returns (last result, first-call seconds, median steady seconds, number of steady repeats). A first call
    slower than `slow_s` is not repeated (steady = first, repeats = 0); a later one stops the repeats."""
    repeats = REPEATS if repeats is None else repeats
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    if first > slow_s:  # nothing to compile worth separating (eager peers): the first call is the measurement
        return out, first, first, 0
    steady = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        steady.append(time.perf_counter() - t)
        if steady[-1] > slow_s:
            break
    return out, first, statistics.median(steady), len(steady)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
    }
    for name in (
        "scoreflow",
        "jax",
        "jaxlib",
        "equinox",
        "diffrax",
        "numpy",
        "scipy",
        "torch",
        "diffusers",
        "torchdiffeq",
        "torchsde",
        "k-diffusion",
        "diffusionjax",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device() -> str:
    """The accelerator the JAX (and torch) runners use, e.g. 'cpu: cpu (2 cores)' or 'gpu: NVIDIA H200'."""
    out = []
    try:
        import jax

        d = jax.devices()[0]
        out.append(f"jax {d.platform}: {getattr(d, 'device_kind', '?')}")
    except Exception as e:  # noqa: BLE001
        out.append(f"jax: unavailable ({type(e).__name__})")
    try:
        import torch

        out.append(f"torch: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}")
    except ImportError:
        pass
    return "; ".join(out) + f" ({os.cpu_count()} cpus)"


def load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run_isolated(script: str, jobs: list[list[str]], timeout: float = 3600) -> list[dict]:
    """Run `python script --worker ARGS...` for each job in a fresh process; each prints one JSON list."""
    rows: list[dict] = []
    for args in jobs:
        cmd = [sys.executable, script, "--worker", *args]
        print("  $", " ".join(cmd[1:]), flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t
        marker = "@@JSON@@"
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(marker)]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
            print(f"    FAILED ({wall:.1f} s): {' | '.join(err)}", flush=True)
            rows.append({"job": args, "error": " | ".join(err)})
            continue
        got = json.loads(lines[-1][len(marker) :])
        for r in got:
            print("    " + summarise(r), flush=True)
        rows.extend(got)
    return rows


def summarise(r: dict) -> str:
    keys = [k for k in r if k not in ("framework", "job")]
    return (
        r.get("framework", "?")
        + ": "
        + ", ".join(f"{k}={r[k]:.4g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys)
    )


def emit(rows: list[dict]) -> None:
    """Worker side: hand results to the parent."""
    print("@@JSON@@" + json.dumps(rows, default=float), flush=True)


def run_record(load_before: list[float], t_start: float, rows: list[dict]) -> dict:
    """The part of every results JSON that describes the run: versions, threads, machine load, wall time, rows."""
    return {
        "versions": versions(),
        "device": device(),
        "threads": NUM_THREADS,
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "wall_s": time.perf_counter() - t_start,
        "rows": rows,
    }


def report(title: str, payload: dict, cols: list[tuple[str, str, str]], summary: str = "") -> str:
    """Markdown report: title, run conditions (from `run_record`), the table of good rows, `summary`, failures."""
    rows = payload["rows"]
    good = [r for r in rows if "error" not in r]
    failed = "".join(f"\n- FAILED {' '.join(r['job'])}: {r['error']}" for r in rows if "error" in r)
    return (
        f"# {title}\n\ndevice: {payload.get('device', 'not recorded')}; "
        f"threads = {payload['threads']}; load average before / after: {payload['load_avg_before']} / "
        f"{payload['load_avg_after']}; versions: {payload['versions']}\n\n"
        + md_table(good, cols)
        + summary
        + failed
        + "\n"
    )


def write_results(name: str, payload: dict, table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
    (RESULTS / f"{name}.md").write_text(table)
    print(f"wrote {RESULTS / (name + '.json')} and {RESULTS / (name + '.md')}")


def md_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """cols: (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for r in rows:
        cells = []
        for k, _, f in cols:
            v = r.get(k, "")
            if isinstance(v, float | int) and not isinstance(v, bool) and f:
                cells.append(format(v, f) if np.isfinite(v) else str(v))
            else:
                cells.append(str(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def base_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true", help="reduced run for a smoke check (< 1 min)")
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    return ap


def import_k_diffusion_sampling():
    """`k_diffusion.sampling` without the package's `__init__` (which needs a CUDA torchvision, clip and
    scikit-image): a bare package module points at the installed folder and `torchvision` is stubbed, as
    `shared/bench/PEERS.md` describes. Import diffusers before calling this (it probes torchvision)."""
    import importlib
    import importlib.util
    import types

    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed in this environment (see benchmarks/README.md)")
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    return importlib.import_module("k_diffusion.sampling")
