"""Check that a .pth / .pth.tar file holds the ResUNet parity weights, as torch.load sees it.

Used to verify files written by the Rust ``test_utils::write_pth``::

    .venv-torch/bin/python tools/parity/check_pth.py FILE [--features 16 32 64 128 256]

The file is loaded with ``torch.load(weights_only=True)`` (the safe unpickler, which
accepts only tensors and plain containers). A checkpoint ``{"state_dict": ..., "epoch": N}``
with ``module.`` keys and a bare state dict are both accepted. Every key, its order, dtype,
shape and value must equal ``resunet_torch``'s ``parity-v2`` state dict bit for bit, and
the state dict must load strictly into the model. Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import resunet_torch as rt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path)
    ap.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--gn-groups", type=int, default=8)
    args = ap.parse_args()

    obj = torch.load(args.file, weights_only=True, map_location="cpu")
    if "state_dict" in obj:
        print(f"checkpoint: keys {sorted(obj)}, epoch {obj.get('epoch')!r}")
        sd = {k.removeprefix("module."): v for k, v in obj["state_dict"].items()}
    else:
        sd = dict(obj)
    model = rt.ResUNet(3, 1, args.features, gn_groups=args.gn_groups)
    want = rt.parity_state_dict(model)
    assert list(sd) == list(want), "key order differs from PyTorch's state_dict()"
    for k, v in want.items():
        got = sd[k]
        assert got.dtype == v.dtype and got.shape == v.shape, f"{k}: {got.dtype}{tuple(got.shape)}"
        assert torch.equal(got, v), f"{k}: values differ"
    model.load_state_dict(sd, strict=True)
    print(f"ok: {args.file}: {len(sd)} entries equal the parity-v2 weights bit for bit")


if __name__ == "__main__":
    main()
