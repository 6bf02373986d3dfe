"""Mutation check: apply deliberate bugs to a temporary copy of the repository and record which test catches each.

Each mutation is a regular-expression substitution in one source file (a noise scale of 1.05, a grid one step
short, a flipped drift sign, a dropped log(2 pi), ...) with the tests expected to see it. The working tree
(tracked and untracked-but-not-ignored files, so uncommitted work is included) is copied once to a temporary
directory; the checkout itself is never written. For every mutation the script rewrites one file in the copy,
runs `python -m pytest -q -x -p no:cacheprovider <tests>` from the copy's root with the copy first on
`PYTHONPATH`, restores the file, and at the end prints a markdown table: mutation, caught?, first failing test.

A pattern that no longer matches exactly `count` times (the source changed) is reported as NOT APPLIED, never as
caught; update its pattern. A run that exceeds `--timeout` is reported as TIMEOUT (not caught). Before the
mutations, the same test selection runs once unmutated (skip with `--no-baseline`): if it fails, every "caught"
below would be meaningless, so the script stops.

Usage (from the repository root, in its virtual environment):

    python tools/mutate.py                      # all mutations
    python tools/mutate.py --list               # names, files and tests only
    python tools/mutate.py em-noise ddim-eta    # a subset, by name
    python tools/mutate.py --per-file em-noise  # run each test file separately: which files catch it
    python tools/mutate.py --tests tests/test_samplers.py em-noise  # another test selection

Exit status: 0 if every mutation was applied and caught, 1 if any survived or timed out, 2 if any was not
applied (or the baseline failed). Keep `NPROC=1` in the environment on jaxlib 0.10 CPU (see issue 9).
"""

import argparse
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent

POWER = "tests/test_sampler_power.py"
SAMPLERS = "tests/test_samplers.py"
DPM = "tests/test_dpm_solver.py"
SDE = "tests/test_sde.py"
SCHEDULE = "tests/test_schedule.py"
HUTCHINSON = "tests/test_likelihood.py::test_hutchinson_unbiased_within_three_standard_errors"


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    description: str
    path: str  # relative to the repository root
    pattern: str  # a Python regular expression, applied with re.subn
    replacement: str
    tests: tuple[str, ...]  # pytest arguments (files or node ids), in the order to run them
    count: int = 1  # how many matches the pattern must have, or the mutation is NOT APPLIED


_PC = "scoreflow/_sampler/predictor_corrector.py"
_SAMPLER_TESTS = (POWER, SAMPLERS, DPM)

MUTATIONS = (
    Mutation(
        "em-noise",
        "Euler-Maruyama predictor: noise x1.05",
        _PC,
        r"sde\.diffusion\(t\) \* jnp\.sqrt\(t - s\) \* noise",
        r"1.05 * sde.diffusion(t) * jnp.sqrt(t - s) * noise",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "revdiff-noise",
        "reverse-diffusion predictor: noise x1.05",
        _PC,
        r"jnp\.sqrt\(b2\) / a \* noise",
        r"1.05 * jnp.sqrt(b2) / a * noise",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "langevin-noise",
        "Langevin corrector: noise x1.05",
        _PC,
        r"jnp\.sqrt\(2\.0 \* eps\) \* jax\.random\.normal",
        r"1.05 * jnp.sqrt(2.0 * eps) * jax.random.normal",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "langevin-drift",
        "Langevin corrector: score step x1.1 (noise unchanged)",
        _PC,
        r"x \+ eps \* score\(t, x\)",
        r"x + 1.1 * eps * score(t, x)",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "posterior-noise",
        "DDIM / ancestral step: posterior noise x1.05",
        "scoreflow/_sampler/_steps.py",
        r"sigma_s \* jnp\.sqrt\(var_eta\) \* jax\.random\.normal",
        r"1.05 * sigma_s * jnp.sqrt(var_eta) * jax.random.normal",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "ddim-eta-ignored",
        "DDIM: eta ignored (every run deterministic)",
        "scoreflow/_sampler/ddim.py",
        r"ddim_step\(score, sde, t, s, x, self\.eta,",
        r"ddim_step(score, sde, t, s, x, 0.0,",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "reverse-sde-noise",
        "ReverseSDE: diffusion term x1.05",
        "scoreflow/_sampler/reverse_sde.py",
        r"jnp\.broadcast_to\(sde\.diffusion\(T - s\), x\.shape\)",
        r"jnp.broadcast_to(1.05 * sde.diffusion(T - s), x.shape)",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "edm-churn-noise",
        "EDMHeun: churn noise x1.05",
        "scoreflow/_sampler/edm.py",
        r"xt \+ self\.s_noise \* jnp\.sqrt\(",
        r"xt + 1.05 * self.s_noise * jnp.sqrt(",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "edm-last-level",
        "EDMHeun: the final Euler step starts from the previous level (off by one)",
        "scoreflow/_sampler/edm.py",
        r"raise_level\(ts\[-1\], sig\[-1\], xt, keys\[-1\]\)",
        r"raise_level(ts[-2], sig[-2], xt, keys[-1])",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "grid-off-by-one",
        "time grids: u_i = i / (N + 1), so the grid stops a step short and the last step is doubled",
        "scoreflow/_sampler/discretisation.py",
        r"/ max\(steps, 1\)",
        r"/ max(steps + 1, 1)",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "dpm-grid-off-by-one",
        "DPMSolverPP: grid of steps + 1 levels before the jump to zero (one level too many)",
        "scoreflow/_sampler/dpm_solver.py",
        r"self\.discretisation\.times\(sde, n - 1, t_end\)",
        r"self.discretisation.times(sde, n, t_end)",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "dpm-2m-coefficient",
        "DPMSolverPP 2M: second-order weight 0.55 instead of 1/2",
        "scoreflow/_sampler/dpm_solver.py",
        r"0\.5 \* em1\)",
        r"0.55 * em1)",
        _SAMPLER_TESTS,
    ),
    Mutation(
        "reverse-drift-sign",
        "reverse-SDE drift: f(t) x with the wrong sign",
        "scoreflow/_sde/base.py",
        r"return self\.drift_coeff\(t\) \* x - g\*\*2 \* score",
        r"return -self.drift_coeff(t) * x - g**2 * score",
        (POWER, SAMPLERS, SDE),
    ),
    Mutation(
        "pf-drift-sign",
        "probability-flow ODE: f(t) x with the wrong sign",
        "scoreflow/_sde/base.py",
        r"return self\.drift_coeff\(t\) \* x - 0\.5 \* g\*\*2 \* score",
        r"return -self.drift_coeff(t) * x - 0.5 * g**2 * score",
        (POWER, SAMPLERS, SDE),
    ),
    Mutation(
        "pf-score-weight",
        "probability-flow ODE: score weight 0.525 g^2 instead of g^2 / 2 (5%)",
        "scoreflow/_sde/base.py",
        r"- 0\.5 \* g\*\*2 \* score",
        r"- 0.525 * g**2 * score",
        (POWER, SAMPLERS, SDE),
    ),
    Mutation(
        "prior-log-2pi",
        "Gaussian prior log-density without the log(2 pi) term",
        "scoreflow/_sde/base.py",
        r"d \* \(jnp\.log\(s\) \+ 0\.5 \* jnp\.log\(2 \* jnp\.pi\)\)",
        r"d * jnp.log(s)",
        (SDE, "tests/test_likelihood.py::test_exact_trace_matches_marginal_and_converges"),
    ),
    Mutation(
        "schedule-sigma",
        "VP schedules: sigma(t) x1.05 (alpha and beta unchanged)",
        "scoreflow/_schedule/base.py",
        r"jnp\.sqrt\(jax\.nn\.sigmoid\(-g\)\), jnp\.sqrt\(jax\.nn\.sigmoid\(g\)\)",
        r"jnp.sqrt(jax.nn.sigmoid(-g)), 1.05 * jnp.sqrt(jax.nn.sigmoid(g))",
        (POWER, SCHEDULE, SDE),
    ),
    Mutation(
        "ve-sigma",
        "VESDE: sigma(t) x1.05 (diffusion unchanged)",
        "scoreflow/_sde/ve.py",
        r"return jnp\.ones_like\(log_sigma\), jnp\.exp\(log_sigma\)",
        r"return jnp.ones_like(log_sigma), 1.05 * jnp.exp(log_sigma)",
        (POWER, SDE),
    ),
    Mutation(
        "edm-diffusion",
        "EDMSDE: g(t)^2 = 2.1 t instead of 2 t (5%)",
        "scoreflow/_sde/edm.py",
        r"jnp\.sqrt\(2\.0 \* self\._t\(t\)\)",
        r"jnp.sqrt(2.1 * self._t(t))",
        (POWER, SDE),
    ),
    Mutation(
        "hutchinson-mean",
        "log_likelihood: Hutchinson estimates summed over the probes, not averaged (no 1/num_probes)",
        "scoreflow/_likelihood/log_likelihood.py",
        r"delta = jnp\.mean\(deltas, axis=1\)",
        r"delta = jnp.sum(deltas, axis=1)",
        (HUTCHINSON,),
    ),
)


def _copy_tree(dest: Path) -> None:
    """Copy the working tree's tracked and untracked-but-not-ignored files (not .git, not the venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree, or a submodule
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a rewritten file must never be shadowed by a stale .pyc
    env.setdefault("NPROC", "1")
    env["COLUMNS"] = "300"  # pytest's summary line then keeps the failure message after the test id
    return env


def _check_import(copy: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import scoreflow; print(scoreflow.__file__)"],
        cwd=copy,
        env=_env(copy),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy's tests would import scoreflow from {out}, not from {copy}; aborting")


_FAILED = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", re.MULTILINE)


def _pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, str, str, float]:
    """Run pytest in the copy. Returns (status, first failing test or '', its message, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=copy,
        env=_env(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the pytest process and anything it started, by its group id
        proc.communicate()
        return "TIMEOUT", "", "", time.monotonic() - start
    seconds = time.monotonic() - start
    if proc.returncode == 0:
        return "passed", "", "", seconds
    hit = _FAILED.search(output)
    if proc.returncode in (1, 2) and hit:  # 1: a test failed; 2: interrupted, e.g. a collection error
        kind = "collection error in " if hit.group(1) == "ERROR" and "::" not in hit.group(2) else ""
        return "failed", kind + hit.group(2), (hit.group(3) or "")[:160], seconds
    tail = " / ".join(output.strip().splitlines()[-3:])
    return f"pytest exit {proc.returncode}", "", tail[:200], seconds


def _apply(copy: Path, m: Mutation) -> tuple[str, str] | None:
    """Rewrite the file in the copy; returns (path, original text), or None if the pattern does not match
    exactly `m.count` times."""
    target = copy / m.path
    if not target.is_file():
        return None
    original = target.read_text()
    mutated, n = re.subn(m.pattern, m.replacement, original)
    if n != m.count:
        return None
    target.write_text(mutated)
    return str(target), original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per pytest run (default 1200)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--per-file", action="store_true", help="run each test file of a mutation separately")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    parser.add_argument(
        "--tests",
        action="append",
        metavar="TEST",
        help="run this pytest argument (a file or node id; repeat for more) for every mutation instead of its own",
    )
    args = parser.parse_args(argv)

    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {sorted(known)}")
    selected = [known[n] for n in args.names] if args.names else list(MUTATIONS)
    if args.tests:
        selected = [dataclasses.replace(m, tests=tuple(args.tests)) for m in selected]
    if args.list:  # reads the checkout, writes nothing
        for m in selected:
            src = ROOT / m.path
            n = len(re.findall(m.pattern, src.read_text())) if src.is_file() else 0
            ok = "applies" if n == m.count else f"NOT APPLIED ({n} matches, needs {m.count})"
            print(f"{m.name:20s} {m.path}: {ok}\n{'':20s} {m.description}\n{'':20s} tests: {' '.join(m.tests)}")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="scoreflow-mutate-"))
    copy = tmp / "repo"
    try:
        _copy_tree(copy)
        _check_import(copy)
        print(f"copy of {ROOT} at {copy}", file=sys.stderr)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in selected for t in m.tests))
            status, first, why, seconds = _pytest(copy, tests, args.timeout)
            print(f"baseline (unmutated): {status} in {seconds:.0f} s {first} {why}", file=sys.stderr)
            if status != "passed":
                print("the unmutated tests do not pass; fix that first", file=sys.stderr)
                return 2
        rows = []
        for m in selected:
            applied = _apply(copy, m)
            if applied is None:
                rows.append((m, "NOT APPLIED", "", f"the pattern does not match {m.count} time(s)", 0.0))
                print(f"{m.name}: NOT APPLIED", file=sys.stderr)
                continue
            path, original = applied
            try:
                groups = [(t,) for t in m.tests] if args.per_file else [m.tests]
                for tests in groups:
                    status, first, why, seconds = _pytest(copy, tests, args.timeout)
                    verdict = {"failed": "caught", "passed": "**NOT CAUGHT**"}.get(status, f"**{status}**")
                    label = f"{m.name} [{tests[0]}]" if args.per_file else m.name
                    rows.append((dataclasses.replace(m, name=label), verdict, first, why, seconds))
                    print(f"{label}: {verdict} {first} ({seconds:.0f} s) {why}", file=sys.stderr)
            finally:
                Path(path).write_text(original)

        print("| mutation | file | caught? | first failing test | its message | s |")
        print("|---|---|---|---|---|---|")
        for m, verdict, first, why, seconds in rows:
            why = why.replace("|", "/")[:110]
            print(f"| `{m.name}`: {m.description} | `{m.path}` | {verdict} | `{first}` | {why} | {seconds:.0f} |")
        verdicts = [v for _, v, _, _, _ in rows]
        print(
            f"\n{verdicts.count('caught')} caught, "
            f"{sum(v not in ('caught', 'NOT APPLIED') for v in verdicts)} not caught, "
            f"{verdicts.count('NOT APPLIED')} not applied, of {len(rows)} runs"
        )
        if "NOT APPLIED" in verdicts:
            return 2
        return 0 if all(v == "caught" for v in verdicts) else 1
    finally:
        if args.keep:
            print(f"kept {copy}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
