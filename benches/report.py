#!/usr/bin/env python3
"""Turn one ``benches/run.sh`` run into the markdown tables of docs/BENCHMARKS.md.

Inputs (standard library only, so it runs without the torch venv):

* criterion results: every ``<criterion-dir>/**/new/benchmark.json`` with its
  ``estimates.json`` (median) and ``sample.json`` (per-iteration times ``times[i] / iters[i]``,
  from which min, quartiles and max are taken);
* ``--torch FILE``: the JSON lines of ``benches/torch/forward.py``;
* ``--onnx FILE``: the JSON lines of ``benches/onnx/forward.py`` (ONNX Runtime, same network);
* ``--rss FILE``: the ``/usr/bin/time -v`` output of ``spheromesh segment`` (its exit status
  is read from the same file);
* ``--rss-original FILE`` / ``--rss-torch FILE``: the same for one original-network inference
  at 1024, by ``spheromesh segment`` and by PyTorch's ``forward.py``.

``--since EPOCH`` drops criterion results older than the run (a quick run does not
overwrite the folders of sizes it skipped). Goals (docs/BENCHMARKS.md): shipped model end to
end at 1024 <= 1 s, original-architecture forward <= 1.0x PyTorch and <= 0.8x ONNX Runtime,
segment peak RSS <= 300 MB, one original-network inference at 1024 <= 2 GB (goal 1.5 GB).

    python3 benches/report.py --criterion-dir target/criterion --torch torch.jsonl \\
        --rss rss.txt --since 1700000000 --machine "2 x Intel Xeon" > report.md
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

E2E_ID = "segment_end_to_end_shipped_1024/png"
E2E_GOAL_MS = 1000.0
RATIO_GOAL = 1.0
ONNX_RATIO_GOAL = 0.8
RSS_GOAL_MB = 300.0
# 2 GB = 2e9 bytes, in the MiB that /usr/bin/time reports (as kbytes of 1024 B).
ORIGINAL_RSS_GOAL_MB = 2e9 / 2**20


def load_criterion(root: Path, since: float) -> dict[str, dict]:
    """Per benchmark id: median, min, q1, q3, max (ms), sample and iteration counts."""
    out: dict[str, dict] = {}
    for bench_file in sorted(root.glob("**/new/benchmark.json")):
        new = bench_file.parent
        est_file, sample_file = new / "estimates.json", new / "sample.json"
        if not est_file.exists() or not sample_file.exists():
            continue
        if est_file.stat().st_mtime < since:
            continue
        bench = json.loads(bench_file.read_text())
        est = json.loads(est_file.read_text())
        sample = json.loads(sample_file.read_text())
        per_iter = sorted(t / n / 1e6 for t, n in zip(sample["times"], sample["iters"]) if n > 0)
        if not per_iter:
            continue
        if len(per_iter) >= 2:
            q1, _, q3 = statistics.quantiles(per_iter, n=4, method="inclusive")
        else:
            q1 = q3 = per_iter[0]
        out[bench["full_id"]] = {
            "median": est["median"]["point_estimate"] / 1e6,
            "min": per_iter[0],
            "q1": q1,
            "q3": q3,
            "max": per_iter[-1],
            "samples": len(per_iter),
            "iterations": int(sum(sample["iters"])),
        }
    return out


def load_forward(path: Path | None, framework: str = "pytorch") -> dict[int, dict]:
    """A forward.py's JSON lines of ``framework`` keyed by input size (later lines win)."""
    out: dict[int, dict] = {}
    if path is None or not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("framework") == framework:
            out[int(rec["size"])] = rec
    return out


def load_rss(path: Path | None) -> dict | None:
    """Peak RSS (MB), wall time and exit status from ``/usr/bin/time -v`` output."""
    if path is None or not path.exists():
        return None
    text = path.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*(\S+)", text)
    status = re.search(r"Exit status:\s*(-?\d+)", text)
    if rss is None:
        return {"error": "no 'Maximum resident set size' line (did /usr/bin/time run?)"}
    return {
        "rss_mb": int(rss.group(1)) / 1024,
        "wall": wall.group(1) if wall else "?",
        "status": int(status.group(1)) if status else None,
    }


def ms(v: float) -> str:
    """A duration in ms, with precision that suits its size."""
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def gb(mib: float) -> str:
    """A size given in MiB, as decimal GB (the unit of the memory goals) with the MiB."""
    return f"{mib * 2**20 / 1e9:.2f} GB ({mib:.0f} MiB)"


def verdict(ok: bool | None) -> str:
    """Goal cell: n/a when not measured."""
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def size_key(bench_id: str) -> tuple:
    """Sort ids by group, then numerically by a trailing size."""
    head, _, tail = bench_id.rpartition("/")
    return (head, int(tail)) if tail.isdigit() else (bench_id, 0)


def render(crit: dict, torch: dict, onnx: dict, rss: dict | None, args: argparse.Namespace) -> str:
    lines = []
    if args.machine:
        lines.append(f"Machine: {args.machine}")
    if args.note:
        lines.append(f"Note: {args.note}")
    if lines:
        lines.append("")

    lines += [
        "### candle stages (criterion)",
        "",
        "| benchmark | median | min | q1-q3 | max | samples / iterations |",
        "|---|---|---|---|---|---|",
    ]
    for bench_id in sorted(crit, key=size_key):
        r = crit[bench_id]
        lines.append(
            f"| `{bench_id}` | {ms(r['median'])} | {ms(r['min'])} | {ms(r['q1'])}-{ms(r['q3'])} "
            f"| {ms(r['max'])} | {r['samples']} / {r['iterations']} |"
        )
    if not crit:
        lines.append("| (no criterion results from this run) | | | | | |")

    lines += [
        "",
        "### original architecture (132 M parameters): candle vs PyTorch, forward pass",
        "",
        "| input | candle median (min-max) | PyTorch median (min-max) | candle / PyTorch | PyTorch runs, threads |",
        "|---|---|---|---|---|",
    ]
    sizes = sorted(
        {int(k.rpartition("/")[2]) for k in crit if k.startswith("forward_original/")} | set(torch)
    )
    ratios = []
    for size in sizes:
        c, t = crit.get(f"forward_original/{size}"), torch.get(size)
        c_cell = f"{ms(c['median'])} ({ms(c['min'])}-{ms(c['max'])})" if c else "not run"
        t_cell = f"{ms(t['median_ms'])} ({ms(t['min_ms'])}-{ms(t['max_ms'])})" if t else "not run"
        ratio = c["median"] / t["median_ms"] if c and t else None
        if ratio is not None:
            ratios.append((size, ratio))
        r_cell = f"{ratio:.2f}x" if ratio is not None else "-"
        extra = f"{t['runs']}, {t['threads']}" if t else "-"
        lines.append(f"| {size}x{size} | {c_cell} | {t_cell} | {r_cell} | {extra} |")
    if not sizes:
        lines.append("| (none) | | | | |")
    # forward.py: CPU time far below threads x wall means the run waited for cores.
    busy = [t for t in torch.values() if t.get("cpu_median_ms", 0) < 0.6 * t["threads"] * t["median_ms"]]
    if busy:
        lines.append("")
        lines.append(
            "PyTorch used well under threads x wall-clock CPU time at sizes "
            + ", ".join(str(t["size"]) for t in busy)
            + f" (load average {max(t['loadavg_1m'] for t in busy)}): the machine was busy, rerun when quiet."
        )
    if torch:
        lines.append("")
        lines.append(f"PyTorch {next(iter(torch.values()))['torch']}.")

    lines += [
        "",
        "### original architecture: candle vs ONNX Runtime, forward pass",
        "",
        "| input | candle median (min-max) | ONNX Runtime median (min-max) | candle / ONNX Runtime | ORT runs, threads |",
        "|---|---|---|---|---|",
    ]
    onnx_ratios = []
    onnx_sizes = sorted({int(k.rpartition("/")[2]) for k in crit if k.startswith("forward_original/")} | set(onnx))
    for size in onnx_sizes:
        c, o = crit.get(f"forward_original/{size}"), onnx.get(size)
        c_cell = f"{ms(c['median'])} ({ms(c['min'])}-{ms(c['max'])})" if c else "not run"
        o_cell = f"{ms(o['median_ms'])} ({ms(o['min_ms'])}-{ms(o['max_ms'])})" if o else "not run"
        ratio = c["median"] / o["median_ms"] if c and o else None
        if ratio is not None:
            onnx_ratios.append((size, ratio))
        extra = f"{o['runs']}, {o['threads']}" if o else "-"
        lines.append(f"| {size}x{size} | {c_cell} | {o_cell} | {f'{ratio:.2f}x' if ratio else '-'} | {extra} |")
    if not onnx_sizes:
        lines.append("| (none) | | | | |")
    if onnx:
        lines.append("")
        lines.append(f"ONNX Runtime {next(iter(onnx.values()))['onnxruntime']}, all graph optimisations.")

    lines += ["", "### peak memory of `spheromesh segment` (1024x1024 PNG)", ""]
    if rss is None:
        lines.append("not measured in this run")
    elif "error" in rss:
        lines.append(f"not measured: {rss['error']}")
    else:
        status = "" if rss["status"] == 0 else f" (**command failed, exit status {rss['status']}**)"
        lines.append(f"peak RSS {rss['rss_mb']:.0f} MB, wall {rss['wall']}{status}")

    orig, torch_rss = load_rss(args.rss_original), load_rss(args.rss_torch)
    if orig is not None or torch_rss is not None:
        lines += ["", "### peak memory of one original-network inference at 1024", "",
                  "| | peak RSS | wall |", "|---|---|---|"]
        for name, r in (("`spheromesh segment` (original checkpoint, no TTA)", orig),
                        ("PyTorch `forward.py` (same network, one pass)", torch_rss)):
            if r is None or "error" in r:
                lines.append(f"| {name} | not measured | |")
            else:
                failed = "" if r["status"] == 0 else f" (**exit status {r['status']}**)"
                lines.append(f"| {name} | {gb(r['rss_mb'])}{failed} | {r['wall']} |")
    orig_ok = None if orig is None or "error" in orig or orig["status"] != 0 else orig["rss_mb"] <= ORIGINAL_RSS_GOAL_MB

    e2e = crit.get(E2E_ID)
    rss_ok = None if rss is None or "error" in rss or rss["status"] != 0 else rss["rss_mb"] <= RSS_GOAL_MB
    lines += [
        "",
        "### goals",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
        f"| shipped model, 1024x1024 end to end <= 1 s | {ms(e2e['median']) if e2e else 'not run'} "
        f"| {verdict(None if e2e is None else e2e['median'] <= E2E_GOAL_MS)} |",
        "| original-architecture forward <= 1.0x PyTorch | "
        + (", ".join(f"{s}: {r:.2f}x" for s, r in ratios) or "not run")
        + f" | {verdict(None if not ratios else all(r <= RATIO_GOAL for _, r in ratios))} |",
        "| original-architecture forward <= 0.8x ONNX Runtime | "
        + (", ".join(f"{s}: {r:.2f}x" for s, r in onnx_ratios) or "not run")
        + f" | {verdict(None if not onnx_ratios else all(r <= ONNX_RATIO_GOAL for _, r in onnx_ratios))} |",
        f"| `spheromesh segment` peak RSS <= {RSS_GOAL_MB:.0f} MB | "
        + (f"{rss['rss_mb']:.0f} MB" if rss and "rss_mb" in rss else "not measured")
        + f" | {verdict(rss_ok)} |",
        "| one original-network inference at 1024, peak RSS <= 2 GB | "
        + (gb(orig["rss_mb"]) if orig and "rss_mb" in orig else "not measured")
        + f" | {verdict(orig_ok)} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion-dir", type=Path, default=Path("target/criterion"))
    ap.add_argument("--torch", type=Path, help="forward.py JSON lines")
    ap.add_argument("--onnx", type=Path, help="onnx/forward.py JSON lines")
    ap.add_argument("--rss", type=Path, help="/usr/bin/time -v output of spheromesh segment")
    ap.add_argument("--rss-original", type=Path, help="the same, original network at 1024")
    ap.add_argument("--rss-torch", type=Path, help="/usr/bin/time -v output of forward.py at 1024")
    ap.add_argument("--since", type=float, default=0.0, help="ignore criterion results older than this epoch")
    ap.add_argument("--machine", default="", help="one line describing the machine")
    ap.add_argument("--note", default="", help="one line printed under the machine")
    args = ap.parse_args()
    crit = load_criterion(args.criterion_dir, args.since) if args.criterion_dir.exists() else {}
    onnx = load_forward(args.onnx, "onnxruntime")
    sys.stdout.write(render(crit, load_forward(args.torch), onnx, load_rss(args.rss), args))


if __name__ == "__main__":
    main()
