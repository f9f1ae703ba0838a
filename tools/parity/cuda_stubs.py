#!/usr/bin/env python3
"""Build no-op stand-ins for the CUDA libraries that PyPI's Linux torch wheel links against.

Why this exists
---------------
PyPI only ships CUDA builds of torch for Linux x86_64. Their shared objects carry
``DT_NEEDED`` entries for ``libcudart.so.13``, ``libcudnn.so.9``, ``libnccl.so.2`` and a
dozen more, which normally arrive as ``nvidia-*`` / ``cuda-toolkit`` wheels: several GB
that a CPU-only parity check never calls. Python ``dlopen``s extensions with
``RTLD_NOW``, so every one of those libraries must exist and every referenced symbol
must resolve, even though no CPU op calls them.

This script reads the torch libraries with binutils (``nm``, ``readelf``), finds each
needed library that is neither shipped in ``torch/lib`` nor known to ``ldconfig``, and
compiles (with ``cc``) a small stub with the right soname, the right symbol version
nodes, and one function per referenced symbol. Every stub function returns 100, which
is ``cudaErrorNoDevice`` for the runtime API, so ``torch.cuda.is_available()`` reports
``False`` instead of crashing. Nothing numeric on the CPU path goes through them.

Usage: ``python3 cuda_stubs.py TORCH_LIB_DIR`` (the stubs are written into that
directory, which is on every torch library's ``$ORIGIN`` rpath). Re-running is harmless.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

STUB_MARKER = "spheromesh-cuda-stub"


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def needed(lib: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", run("readelf", "-d", str(lib)))


def version_needs(lib: Path) -> dict[str, str]:
    """Map each symbol version this library requires to the library file that must define it."""
    out: dict[str, str] = {}
    current = None
    in_section = False
    for line in run("readelf", "-V", "--wide", str(lib)).splitlines():
        if "Version needs section" in line:
            in_section = True
            continue
        if in_section and line.startswith("Version"):
            in_section = False
        if not in_section:
            continue
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Name: (\S+)", line)
        if m and current:
            out[m.group(1)] = current
    return out


def undefined(lib: Path) -> list[tuple[str, str | None]]:
    syms = []
    for line in run("nm", "-D", "--undefined-only", "--with-symbol-versions", str(lib)).splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "U":
            continue
        name, _, ver = parts[1].partition("@")
        syms.append((name, ver.lstrip("@") or None))
    return syms


def defined(lib: Path) -> set[str]:
    names = set()
    for line in run("nm", "-D", "--defined-only", str(lib)).splitlines():
        parts = line.split()
        if len(parts) >= 3:
            names.add(parts[2].split("@")[0])
    return names


def is_stub(path: Path) -> bool:
    """True for a stub this script wrote (they are a few kB; torch's own libraries are MBs)."""
    return path.stat().st_size < 1 << 20 and STUB_MARKER.encode() in path.read_bytes()


def system_path(soname: str, cache: str) -> Path | None:
    m = re.search(rf"^\s*{re.escape(soname)} \(.*?\) => (\S+)$", cache, re.M)
    return Path(m.group(1)) if m else None


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    libdir = Path(sys.argv[1])
    libs = sorted(p for p in libdir.glob("*.so*") if p.is_file() and not is_stub(p))
    ldcache = run("ldconfig", "-p")

    # Which needed sonames can really be found, and what do they define?
    provided: set[str] = set()
    missing: set[str] = set()
    for lib in libs:
        provided |= defined(lib)
        for soname in needed(lib):
            if (libdir / soname).exists() and not is_stub(libdir / soname):
                continue
            path = system_path(soname, ldcache)
            if path is not None:
                provided |= defined(path)
            else:
                missing.add(soname)
    if not missing:
        print("cuda_stubs: nothing missing, no stubs needed")
        return 0

    # stub soname -> version node (None = unversioned) -> symbols
    wanted: dict[str, dict[str | None, set[str]]] = {s: defaultdict(set) for s in missing}
    for lib in libs:
        vneeds = version_needs(lib)
        lib_missing = [s for s in needed(lib) if s in missing]
        for name, ver in undefined(lib):
            if ver and vneeds.get(ver) in missing:
                wanted[vneeds[ver]][ver].add(name)
            elif name not in provided and lib_missing and not ver:
                # Unversioned and defined nowhere: any library in this object's
                # dependency scope may provide it, so use its first missing one.
                wanted[lib_missing[0]][None].add(name)

    with tempfile.TemporaryDirectory() as tmp:
        for soname, by_version in sorted(wanted.items()):
            src = Path(tmp) / "stub.c"
            script = Path(tmp) / "stub.map"
            all_syms = sorted(set().union(*by_version.values())) if by_version else []
            body = [f'const char spheromesh_stub_id[] = "{STUB_MARKER}";']
            body += [f"int {s}(void) {{ return 100; }}" for s in all_syms]
            src.write_text("\n".join(body) + "\n")
            nodes = [
                f"{ver} {{ global: {' '.join(s + ';' for s in sorted(syms))} }};"
                for ver, syms in sorted((v, s) for v, s in by_version.items() if v)
            ]
            script.write_text("\n".join(nodes) + "\n" if nodes else "{ global: *; };\n")
            out = libdir / soname
            run("cc", "-shared", "-fPIC", "-w", "-o", str(out), f"-Wl,-soname,{soname}",
                f"-Wl,--version-script={script}", str(src))
            print(f"cuda_stubs: {soname}: {len(all_syms)} symbols")
    return 0


if __name__ == "__main__":
    sys.exit(main())
