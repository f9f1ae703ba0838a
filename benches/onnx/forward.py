"""Time the original ResUNet's forward pass in ONNX Runtime on the CPU: the second baseline.

What a SpherosegV4 user would pick instead of candle is not only PyTorch but ONNX Runtime, so
this times the very network ``benches/torch/forward.py`` times (``ResUNet(3, 1, [64 .. 1024])``,
GroupNorm(32), the deterministic parity weights that candle's ``forward_original`` bench also
loads), exported with ``torch.onnx.export`` and run by ``onnxruntime`` with every graph
optimisation (``ORT_ENABLE_ALL``), ``--threads`` intra-op threads and one inter-op thread,
batch 1, float32. For each size it runs ``--warmup`` untimed passes, then ``--runs`` timed
ones, and prints one JSON line in forward.py's shape::

    {"framework": "onnxruntime", "size": 256, "median_ms": ..., "min_ms": ..., "max_ms": ...,
     "runs": N, "threads": 2, "onnxruntime": "1.x", "torch": "2.15.0", "cpu_median_ms": ...,
     "loadavg_1m": ...}

The exported graph (about 530 MB, dynamic height and width) is written to ``--onnx-dir``
(default ``target/onnx``) and reused when present; a fresh export is checked against PyTorch
(max |diff| of the logits <= 1e-3 on a 96x96 input) before it is kept. Run after ``tools/parity/setup_venv.sh``
and ``pip install onnxruntime`` in that venv (``benches/run.sh`` does both)::

    .venv-torch/bin/python benches/onnx/forward.py --sizes 256 512 1024 --runs 5
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "parity"))
sys.path.insert(0, str(ROOT / "benches" / "torch"))
import forward as torch_forward  # noqa: E402  (benches/torch/forward.py: shared arguments)
import resunet_torch as rt  # noqa: E402


def export(path: Path, weights: str) -> float:
    """Write the original network with ``weights`` to ``path`` as ONNX (dynamic H and W).

    Returns the largest absolute difference between ONNX Runtime's and PyTorch's logits on a
    96x96 input, so a wrong export cannot pass as a fast one."""
    torch.manual_seed(0)
    model = rt.ResUNet(3, 1, rt.ORIGINAL_FEATURES, gn_groups=32).eval()
    assert rt.parameter_count(model) == rt.ORIGINAL_PARAMETERS
    if weights == "formula":
        rt.load_parity_weights(model)
    x = rt.parity_input(64, 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {2: "height", 3: "width"}, "logits": {2: "height", 3: "width"}},
            opset_version=17,
            dynamo=False,
        )
    probe = rt.parity_input(96, 96)
    with torch.inference_mode():
        want = model(probe).numpy()
    got = session(tmp, 2).run(None, {"image": probe.numpy().astype(np.float32)})[0]
    tmp.replace(path)
    return float(np.abs(got - want).max())


def session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with every graph optimisation and ``threads`` threads."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_forward(sess: ort.InferenceSession, size: int, warmup: int, runs: int) -> list[tuple[float, float]]:
    """(wall ms, process CPU ms) of each of ``runs`` timed passes at ``size`` x ``size``."""
    x = rt.parity_input(size, size).numpy().astype(np.float32)
    feed = {"image": x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        sess.run(None, feed)
        times.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
    return times


def main() -> None:
    ap = torch_forward.common_parser(__doc__)
    ap.add_argument("--onnx-dir", type=Path, default=ROOT / "target" / "onnx")
    args = torch_forward.parse_common(ap)

    path = args.onnx_dir / f"resunet-original-{args.weights}.onnx"
    if not path.exists():
        print(f"exporting {path}", file=sys.stderr)
        err = export(path, args.weights)
        print(f"ONNX Runtime vs PyTorch on 96x96: max |diff| {err:.2e}", file=sys.stderr)
        if err > 1e-3:
            path.unlink()
            sys.exit(f"the exported graph disagrees with PyTorch (max |diff| {err:.2e} > 1e-3)")
    sess = session(path, args.threads)

    for size in args.sizes:
        load = os.getloadavg()[0]
        runs = sorted(time_forward(sess, size, args.warmup, args.runs))
        times = [wall for wall, _ in runs]
        print(json.dumps({
            "framework": "onnxruntime",
            "size": size,
            "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2),
            "runs": args.runs,
            "threads": args.threads,
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "cpu_median_ms": round(runs[len(runs) // 2][1], 2),
            "loadavg_1m": round(load, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
