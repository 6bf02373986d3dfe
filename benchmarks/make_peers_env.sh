#!/usr/bin/env bash
# Create the peers' virtual environment for the side-by-side benchmarks (benchmarks/README.md, "Peers environment").
#
#   benchmarks/make_peers_env.sh [VENV_DIR]
#
# VENV_DIR defaults to .peers-venv at the root of this checkout; every other path is taken relative to the checkout,
# so the script works from any clone and any working directory. Environment variables:
#   PYTHON       interpreter that creates the venv (default: python3; 3.11 or newer, as scoreflow needs)
#   PROJECT_PY   the project's own environment, whose jax stack the peers' environment copies (default: .venv/bin/python
#                at the checkout root; when absent, pip picks versions within pyproject.toml's ranges)
# pip's own variables (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, ...) pass through: point them at a CPU build
# of torch 2.13.0 where the default index would give a CUDA one (several GB).
#
# The peers are kept out of scoreflow's dependencies. What they need, and why k-diffusion and diffusionjax go in
# without their dependencies, is in benchmarks/README.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.peers-venv}"
python="${PYTHON:-python3}"
project_py="${PROJECT_PY:-$root/.venv/bin/python}"
torch_pin="torch==2.13.0"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT

# Same jax stack as the project's environment, so the scoreflow rows measure the code, not another jax; and a
# fixed CPU torch, since anything that pulls a newer torch pulls a CUDA build.
if [ -x "$project_py" ]; then
    "$project_py" -m pip list --format=freeze --exclude-editable 2>/dev/null \
        | grep -iE '^(jax|jaxlib|equinox|diffrax|numpy|scipy|jaxtyping|lineax|optax|distrax|beartype|einops|matplotlib|ml.dtypes|optimistix|chex|wadler)' \
        >>"$constraints" || true
    echo "pinning the jax stack of $project_py ($(wc -l <"$constraints") packages)"
else
    echo "no project environment at $project_py: the jax stack is not pinned (set PROJECT_PY to pin it)"
fi
echo "$torch_pin" >>"$constraints"

echo "creating $venv"
"$python" -m venv "$venv"
venv="$(cd "$venv" && pwd)"  # absolute: the check below runs from benchmarks/
pip=("$venv/bin/python" -m pip install -c "$constraints")

"${pip[@]}" "$torch_pin" diffusers==0.42.1 torchdiffeq==0.2.5 torchsde==0.2.6 scipy matplotlib einops tqdm -e "$root"
# Their declared dependencies (a CUDA torchvision, clip, wandb, numpy < 2) do not install or load with the CPU torch;
# the benchmarks import only what works without them (benchmarks/_common.py: import_k_diffusion_sampling).
"${pip[@]}" --no-deps k-diffusion==0.1.1.post1 diffusionjax==0.1.8
"${pip[@]}" flax ml_collections

# Import every peer the way the benchmarks do, and print the versions the results will record.
cd "$root/benchmarks"
"$venv/bin/python" - <<'EOF'
from importlib import metadata

import diffusers  # noqa: F401  (before k_diffusion: it probes torchvision)
import diffrax  # noqa: F401
import torchdiffeq  # noqa: F401
import torchsde  # noqa: F401
from diffusionjax import solvers, utils  # noqa: F401

import _common
import scoreflow  # noqa: F401

_common.import_k_diffusion_sampling()
names = ("scoreflow", "jax", "jaxlib", "equinox", "diffrax", "numpy", "scipy", "torch", "diffusers", "torchdiffeq")
names += ("torchsde", "k-diffusion", "diffusionjax", "flax")
print("peers environment ready:", ", ".join(f"{n} {metadata.version(n)}" for n in names))
EOF
echo "run the benchmarks with $venv/bin/python benchmarks/bench_<name>.py"
