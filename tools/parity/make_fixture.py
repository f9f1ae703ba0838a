"""Write the ResUNet parity fixture that the candle implementation is checked against.

Builds ``ResUNet(3, 1, features=[16, 32, 64, 128, 256], gn_groups=8)``, loads the
deterministic ``parity-v2`` weights (see ``resunet_torch``), runs the parity input of
shape 1x3x64x64 in eval mode in float32, and writes to ``--out-dir`` (default
``inference/tests/fixtures/parity``):

* ``expected_logits.f32``: the raw little-endian float32 output, shape [1, 1, 64, 64];
* ``meta.json``: configuration, torch version, max |logit| and a few sample values.

No weights are committed: the Rust test recomputes them from the same formula. With
``--checkpoint-dir DIR`` it also writes, for trying the Rust ``.pth`` loader against real
``torch.save`` output (not committed):

* ``DIR/parity_checkpoint_epoch_9.pth.tar``: ``{"state_dict": {"module." + k: v},
  "epoch": 9}``, the layout of the old service's ``checkpoint_epoch_9.pth.tar``;
* ``DIR/parity_state_dict.pth``: the bare state dict;
* ``DIR/parity_state_dict_021.pth``: the bare state dict again, under a 21-character file
  stem. ``torch.save`` names the folder inside the zip after the file stem and always
  appends zip64 end records; with a 21-byte folder name the first central-directory
  record is 76 bytes, the size of those zip64 records, and the ``zip`` crate (9.1.3 to at
  least 9.8.2, used by ``candle_core::pickle``) then picks the wrong central-directory
  start and fails with "Invalid Central Directory header". Keep it for loader tests.

It also asserts that the original configuration (features 64..1024, 32 groups) has the
132,238,512 parameters that backend-contract.md section 5 states.

Run from the repository root after ``tools/parity/setup_venv.sh``::

    .venv-torch/bin/python tools/parity/make_fixture.py [--checkpoint-dir /tmp/pth]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import resunet_torch as rt  # noqa: E402

FEATURES = [16, 32, 64, 128, 256]
GN_GROUPS = 8
INPUT_SHAPE = [1, 3, 64, 64]
ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "inference/tests/fixtures/parity")
    ap.add_argument("--checkpoint-dir", type=Path, help="also write .pth.tar / .pth files here")
    args = ap.parse_args()

    torch.set_num_threads(2)
    original = rt.ResUNet(3, 1, rt.ORIGINAL_FEATURES, gn_groups=32)
    count = rt.parameter_count(original)
    assert count == rt.ORIGINAL_PARAMETERS, f"original ResUNet has {count} parameters"
    del original

    model = rt.load_parity_weights(rt.ResUNet(3, 1, FEATURES, gn_groups=GN_GROUPS)).eval()
    x = rt.parity_input(*INPUT_SHAPE[2:])
    with torch.inference_mode():
        logits = model(x)
    assert logits.dtype == torch.float32 and list(logits.shape) == [1, 1, *INPUT_SHAPE[2:]]
    flat = logits.flatten().numpy()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    flat.astype("<f4").tofile(args.out_dir / "expected_logits.f32")
    sample_at = [0, 1, 63, 64, 2080, 4095]
    meta = {
        "formula": rt.FORMULA_VERSION,
        "model": "ResUNet",
        "in_channels": 3,
        "out_channels": 1,
        "features": FEATURES,
        "gn_groups": GN_GROUPS,
        "se_reduction": 16,
        "input_shape": INPUT_SHAPE,
        "output_shape": list(logits.shape),
        "output_file": "expected_logits.f32",
        "output_dtype": "float32 little-endian, row-major",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameters": rt.parameter_count(model),
        "state_dict_entries": len(model.state_dict()),
        "max_abs_logit": float(np.abs(flat).max()),
        "mean_logit": float(flat.mean()),
        "samples": {str(i): float(flat[i]) for i in sample_at},
        "input_samples": {str(i): float(x.flatten()[i]) for i in [0, 1, 100, 12287]},
        "regenerate": ".venv-torch/bin/python tools/parity/make_fixture.py",
    }
    (args.out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out_dir}: max |logit| {meta['max_abs_logit']:.6f}, torch {torch.__version__}")

    if args.checkpoint_dir:
        args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        sd = model.state_dict()
        # DataParallel's state dict is what the old trainer saved: "module." keys plus
        # the OrderedDict's _metadata attribute, which the pickle carries too.
        wrapped = torch.nn.DataParallel(model).state_dict()
        assert list(wrapped) == ["module." + k for k in sd]
        names = ["parity_checkpoint_epoch_9.pth.tar", "parity_state_dict.pth", "parity_state_dict_021.pth"]
        torch.save({"state_dict": wrapped, "epoch": 9}, args.checkpoint_dir / names[0])
        torch.save(sd, args.checkpoint_dir / names[1])
        torch.save(sd, args.checkpoint_dir / names[2])
        print(f"wrote {', '.join(names)} to {args.checkpoint_dir}")


if __name__ == "__main__":
    main()
