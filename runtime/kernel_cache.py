"""Compiled kernel modules: NVRTC (through CuPy) compiles generated source to PTX for the current
device, kept in memory and on disk.

The disk cache lives in ``~/.cache/pigeon`` (``PIGEON_CACHE_DIR`` overrides it). An entry is
keyed by the hash of the source, the target architecture and the NVRTC and CuPy versions; it is
written to a temporary file and renamed into place (safe with several processes filling the
cache at once: none reads a partial file) and starts with a header naming the format version
and the checksum of the PTX. A truncated, altered or other-version entry is reported with one
``CacheWarning`` and compiled again instead of trusted.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PTX_FORMAT = "// pigeon-ptx-cache 2 sha256="  # the first line of an entry, then the PTX's checksum


class CompileError(RuntimeError):
    """NVRTC rejected generated source; the message shows the failing lines."""


class CacheWarning(UserWarning):
    """A file of one of Pigeon's disk caches was damaged or written by another version of its
    format; it is set aside or rebuilt."""


def cache_dir() -> Path:
    return Path(os.environ.get("PIGEON_CACHE_DIR") or Path.home() / ".cache" / "pigeon")


def warn_cache_file(path: Path, problem: str, action: str = "rebuilding it") -> None:
    """The one warning for a cache file that cannot be used (``problem``), and what is done."""
    warnings.warn(f"the cache file {path} is {problem}; {action}", CacheWarning, stacklevel=3)


def _cupy() -> Any:
    try:
        import cupy
        from cupy.cuda import nvrtc  # noqa: F401
    except ImportError as err:
        raise ImportError("generated kernels need CuPy and NVRTC: pip install 'pigeon-rgnn[cuda13]' "
                          "(or [cuda12] for CUDA 12)") from err
    return cupy


def toolchain_version() -> str:
    """NVRTC and CuPy versions: part of every cache key."""
    cupy = _cupy()
    from cupy.cuda import nvrtc
    return f"nvrtc-{'.'.join(map(str, nvrtc.getVersion()))}-cupy-{cupy.__version__}"


def excerpt(source: str, log: str, context: int = 4) -> str:
    """The lines of ``source`` around each line NVRTC's log names, numbered."""
    import re

    lines = source.splitlines()
    wanted = sorted({int(m) for m in re.findall(r"\((\d+)\): ", log)})
    shown = []
    for line in wanted:
        lo, hi = max(1, line - context), min(len(lines), line + context)
        shown += [f"{'>' if n == line else ' '} {n:5d} | {lines[n - 1]}" for n in range(lo, hi + 1)] + ["  ..."]
    return "\n".join(shown)


def _nvrtc(source: str, arch: str, name: str, description: str, options: list[str], output: str) -> str:
    """NVRTC's ``output`` ("PTX" or "ProgramLog") for ``source`` compiled for ``arch``."""
    _cupy()
    from cupy.cuda import nvrtc

    program = nvrtc.createProgram(source, f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}", "-std=c++17", *options])
        text = getattr(nvrtc, f"get{output}")(program)
    except nvrtc.NVRTCError:
        log = nvrtc.getProgramLog(program)
        raise CompileError(f"NVRTC could not compile {name} for {arch}:\n{log}\n{excerpt(source, log)}"
                           + (f"\nfrom the plan:\n{description}" if description else "")) from None
    finally:
        nvrtc.destroyProgram(program)
    return text.decode() if isinstance(text, bytes) else text


def compile_ptx(source: str, arch: str, name: str = "pigeon", description: str = "") -> str:
    """PTX of ``source`` for ``arch`` (such as ``compute_80``); needs no GPU."""
    return _nvrtc(source, arch, name, description, [], "PTX")


@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one kernel compiled to machine code (SASS)."""

    registers: int
    stack_bytes: int  # the stack frame: local memory, such as arrays indexed at run time
    spill_bytes: int  # spill stores plus spill loads
    shared_bytes: int


def occupancy(resources: Resources, block: int, shared_per_sm: int = 228 * 1024) -> float:
    """Theoretical occupancy (resident warps over the 64 a multiprocessor holds) of a kernel with
    these resources in blocks of ``block`` threads on compute capability 9.0."""
    warps = -(-block // 32)
    regs_per_warp = -(-max(resources.registers, 1) * 32 // 256) * 256  # allocated in units of 256
    by_registers = (65536 // regs_per_warp) // warps
    by_shared = shared_per_sm // resources.shared_bytes if resources.shared_bytes else 32
    blocks = min(by_registers, by_shared, 32, 64 // warps)
    return blocks * warps / 64


def kernel_resources(source: str, arch: str = "sm_90", name: str = "pigeon") -> dict[str, Resources]:
    """Per kernel of ``source``: the registers, stack frame, spills and shared memory that
    ptxas reports when NVRTC compiles it to machine code for ``arch``; needs no GPU."""
    return parse_ptxas_report(_nvrtc(source, arch, name, "", ["--ptxas-options=-v"], "ProgramLog"))


def parse_ptxas_report(log: str) -> dict[str, Resources]:
    import re

    found: dict[str, Resources] = {}
    for block in re.split(r"Compiling entry function ", log)[1:]:
        name = re.match(r"'(\w+)'", block).group(1)
        number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, block)) else 0  # noqa: E731
        found[name] = Resources(number(r"Used (\d+) registers"), number(r"(\d+) bytes stack frame"),
                                number(r"(\d+) bytes spill stores") + number(r"(\d+) bytes spill loads"),
                                number(r"(\d+) bytes smem"))
    return found


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stored_ptx(path: Path) -> str | None:
    """The PTX of a cache entry; None (with one warning unless the entry is missing) if unusable."""
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        warn_cache_file(path, f"unreadable ({err})")
        return None
    header, _, body = text.partition("\n")
    if not header.startswith(PTX_FORMAT):
        other = header.startswith("// pigeon-")
        warn_cache_file(path, "from another version of the cache format" if other else "damaged (no header)")
        return None
    if header != PTX_FORMAT + _checksum(body):
        warn_cache_file(path, "damaged (truncated or altered: its checksum does not match)")
        return None
    return body


def cached_ptx(source: str, arch: str, name: str = "pigeon", description: str = "") -> str:
    """PTX from the disk cache, compiled and stored if missing, damaged or of another format."""
    key = _checksum("\0".join([source, arch, toolchain_version()]))
    path = cache_dir() / f"{key}.ptx"
    ptx = _stored_ptx(path)
    if ptx is not None:
        return ptx
    ptx = compile_ptx(source, arch, name, description)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write((PTX_FORMAT + _checksum(ptx) + "\n" + ptx).encode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ptx


class KernelCache:
    """Loaded modules in memory, by (source, arch)."""

    def __init__(self) -> None:
        self._modules: dict[tuple[str, str], Any] = {}

    def module(self, source: str, arch: str, name: str = "pigeon", description: str = "") -> Any:
        key = (_checksum(source), arch)
        if key not in self._modules:
            cupy = _cupy()
            ptx = cached_ptx(source, arch, name, description)
            module = cupy.cuda.function.Module()
            module.load(ptx.encode())
            self._modules[key] = module
        return self._modules[key]


KERNELS = KernelCache()
