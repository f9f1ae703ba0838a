#!/usr/bin/env bash
# Create the CPU PyTorch virtualenv used by the parity tools and the torch benchmark.
#
#   tools/parity/setup_venv.sh            # -> <repo>/.venv-torch (gitignored)
#   VENV=/some/dir tools/parity/setup_venv.sh
#   TORCH_FULL_DEPS=1 tools/parity/setup_venv.sh   # real CUDA deps instead of stubs
#
# PyPI's Linux x86_64 torch wheel is a CUDA build (539 MB) whose dependencies add
# several GB of nvidia-*/cuda-toolkit wheels. For CPU work we install the wheel with
# --no-deps, add its pure-Python dependencies, and satisfy the CUDA sonames with tiny
# no-op stubs built by cuda_stubs.py (needs cc, nm and readelf). The CPU kernels are
# the wheel's own; only CUDA entry points are stubbed, and torch.cuda.is_available()
# is False. Idempotent: an existing venv that passes the check is left alone.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv-torch}"
TORCH_VERSION="${TORCH_VERSION:-2.15.0}"
PYTHON="${PYTHON:-python3}"
PY="$VENV/bin/python"

say() { echo "setup_venv: $*"; }

check() {
    # Import torch and run a convolution on the CPU against a NumPy reference.
    "$PY" - "$TORCH_VERSION" <<'PYEOF'
import sys
import numpy as np
import torch
import torch.nn.functional as F

want = sys.argv[1]
assert torch.__version__.split("+")[0] == want, f"torch {torch.__version__}, want {want}"
torch.manual_seed(0)
x, w = torch.randn(1, 3, 9, 9), torch.randn(4, 3, 3, 3)
y = F.conv2d(x, w, padding=1).numpy()
xp = np.pad(x.numpy()[0], ((0, 0), (1, 1), (1, 1)))
ref = np.zeros((4, 9, 9), np.float64)
for i in range(3):
    for j in range(3):
        ref += np.einsum("oc,chw->ohw", w.numpy()[:, :, i, j], xp[:, i:i + 9, j:j + 9])
err = float(np.abs(y[0] - ref).max())
assert err < 1e-4, f"conv2d mismatch {err}"
print(f"setup_venv: ok: torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
      f"threads {torch.get_num_threads()}, conv2d max |err| {err:.1e}")
PYEOF
}

if [ -x "$PY" ] && check 2>/dev/null; then
    say "$VENV already set up, nothing to do"
    exit 0
fi

if [ ! -x "$PY" ]; then
    say "creating virtualenv $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi

PIP=("$PY" -m pip install --disable-pip-version-check --no-input)
if [ "${TORCH_FULL_DEPS:-0}" = 1 ]; then
    say "installing torch==$TORCH_VERSION with all its (CUDA) dependencies"
    "${PIP[@]}" "torch==$TORCH_VERSION" numpy
else
    say "installing torch==$TORCH_VERSION without dependencies (CPU use only)"
    "${PIP[@]}" --no-deps "torch==$TORCH_VERSION"
    say "installing torch's pure-Python dependencies and numpy (pip will warn that the CUDA wheels are missing: expected)"
    "${PIP[@]}" filelock "typing-extensions>=4.13" "sympy>=1.13.3" "networkx>=2.5.1" jinja2 "fsspec>=0.8.5" numpy
    TORCH_LIB="$("$PY" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("torch").origin), "lib"))')"
    say "building CUDA library stubs in $TORCH_LIB"
    "$PY" "$HERE/cuda_stubs.py" "$TORCH_LIB"
fi

say "checking the install"
check
