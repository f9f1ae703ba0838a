"""Write the original ResUNet's ``state_dict`` with ``torch.save``: a checkpoint shaped like
the old service's, for ``spheromesh segment --model`` in the memory benchmark.

Weights are PyTorch's initialisation (seed 0): memory and time do not depend on their values.

    .venv-torch/bin/python benches/torch/save_checkpoint.py target/bench-report/original.pth
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "parity"))
import resunet_torch as rt  # noqa: E402


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.pth")
    torch.manual_seed(0)
    model = rt.ResUNet(3, 1, rt.ORIGINAL_FEATURES, gn_groups=32).eval()
    assert rt.parameter_count(model) == rt.ORIGINAL_PARAMETERS
    torch.save(model.state_dict(), sys.argv[1])


if __name__ == "__main__":
    main()
