"""Time the original ResUNet's forward pass in PyTorch on the CPU: the baseline for candle.

Model: ``ResUNet(3, 1, [64, 128, 256, 512, 1024])`` with GroupNorm(32), the network the old
service ran (``tools/parity/resunet_torch.py``), in eval mode, float32, batch 1, under
``torch.inference_mode()``. For each input size it runs ``--warmup`` untimed passes, then
``--runs`` timed ones, and prints one JSON line::

    {"framework": "pytorch", "size": 256, "median_ms": ..., "min_ms": ..., "max_ms": ...,
     "runs": N, "threads": 2, "torch": "2.15.0+cu132", "cpu_median_ms": ..., "loadavg_1m": ...}

``median_ms``/``min_ms``/``max_ms`` are wall-clock. ``cpu_median_ms`` is the process CPU time
of the median run (all threads): on an idle machine it is about ``threads x median_ms``;
much less means the run waited for cores that other work held, and ``loadavg_1m`` (taken
before the size's runs) says how busy the machine was. Compare timings only from quiet runs.

Weights: ``--weights formula`` (default) loads the deterministic parity weights, about 15 s
of NumPy for 132 M parameters; ``--weights random`` keeps PyTorch's initialisation. Either
way the cost of a forward pass is the same; the formula keeps activations realistic.

Run after ``tools/parity/setup_venv.sh``, from the repository root::

    .venv-torch/bin/python benches/torch/forward.py --sizes 256 512 1024 --runs 5

``--device cuda`` times the same model on the GPU (``torch.cuda.synchronize()`` closes each
timed pass; TF32 stays off so the arithmetic is float32 like candle's); the CPU is the default.

A 1024x1024 pass costs about 2 TFLOP and takes tens of seconds on 2 cores: lower
``--runs`` / ``--warmup`` for it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "parity"))
import resunet_torch as rt  # noqa: E402


def time_forward(
    model: torch.nn.Module, size: int, warmup: int, runs: int, device: torch.device
) -> list[tuple[float, float]]:
    """(wall ms, process CPU ms) of each of ``runs`` timed forward passes at ``size`` x ``size``."""
    x = rt.parity_input(size, size).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            sync()
            times.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
    return times


def common_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every forward-pass baseline takes (PyTorch here, ONNX Runtime too)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Both "--sizes 256 512" and "--sizes 256,512" (the form benches/run.sh passes).
    ap.add_argument("--sizes", nargs="+", default=["256,512,1024"], help="input sides, space- or comma-separated")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per size")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", choices=["formula", "random"], default="formula")
    return ap


def parse_common(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parses, turning ``--sizes`` into checked integers (multiples of 32)."""
    args = ap.parse_args()
    try:
        args.sizes = [int(s) for arg in args.sizes for s in arg.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes takes integers, got {args.sizes}")
    if not args.sizes or any(s <= 0 or s % 32 for s in args.sizes):
        ap.error("input sizes must be positive multiples of 32 (five 2x2 poolings)")
    return args


def main() -> None:
    ap = common_parser(__doc__)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parse_common(ap)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = rt.ResUNet(3, 1, rt.ORIGINAL_FEATURES, gn_groups=32).eval()
    assert rt.parameter_count(model) == rt.ORIGINAL_PARAMETERS
    if args.weights == "formula":
        rt.load_parity_weights(model)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = model.to(device)

    for size in args.sizes:
        load = os.getloadavg()[0]
        runs = sorted(time_forward(model, size, args.warmup, args.runs, device))
        times = [wall for wall, _ in runs]
        print(json.dumps({
            "framework": "pytorch",
            "device": args.device,
            "size": size,
            "median_ms": round(statistics.median(times), 2),
            "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2),
            "runs": args.runs,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_median_ms": round(runs[len(runs) // 2][1], 2),
            "loadavg_1m": round(load, 2),
        }), flush=True)


if __name__ == "__main__":
    main()
