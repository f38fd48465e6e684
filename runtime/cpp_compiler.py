"""Generated C++ compiled by the system compiler into shared libraries, kept on disk and loaded
with ctypes.

The compiler is ``$CXX``, else ``g++``, else ``clang++``, run with ``-O3 -march=native -fopenmp
-shared -fPIC``. Libraries live in the kernel cache folder (``PIGEON_CACHE_DIR``, else
``~/.cache/pigeon``) under ``cpp/``, keyed by the hash of the source, the compiler's identity and
version, the flags and the CPU's features. An entry is written to a temporary file and renamed
into place (several processes may fill the cache at once: none reads a partial file); its
manifest, written last, names the format version, the library and the library's checksum. A
truncated or altered library, or a damaged or other-version manifest, is reported with one
``CacheWarning`` and compiled again instead of loaded.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .kernel_cache import cache_dir, warn_cache_file

MANIFEST_FORMAT = "pigeon-cpp-cache 2"  # the first line of a manifest
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-fno-math-errno", "-ffp-contract=off")


class CppCompileError(RuntimeError):
    """The C++ compiler rejected generated source; the message holds its output and the source path."""


class NoCompilerError(RuntimeError):
    """No C++ compiler with OpenMP was found."""


@functools.lru_cache(maxsize=None)
def _probe(compiler: str) -> str | None:
    """The compiler's identity and version if it builds an OpenMP shared library, else None."""
    path = shutil.which(compiler)
    if path is None:
        return None
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "probe.cpp"
            src.write_text('#include <omp.h>\nextern "C" int probe() { return omp_get_max_threads(); }\n')
            ok = subprocess.run([path, *FLAGS, str(src), "-o", str(Path(tmp) / "probe.so")],
                                capture_output=True, text=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{path}: {version.splitlines()[0] if version else '?'}" if ok else None


def find_compiler() -> str | None:
    """The C++ compiler the back end uses: ``$CXX``, else ``g++``, else ``clang++`` (None: none works)."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++"]
    return next((c for c in candidates if _probe(c) is not None), None)


@functools.lru_cache(maxsize=None)
def cpu_features() -> str:
    """What ``-march=native`` depends on: the machine and its CPU flags."""
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^(flags|Features)\s*:(.*)$", text, re.M)
        flags = " ".join(sorted(found.group(2).split())) if found else ""
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()} {flags}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compile_library(source: str, name: str = "pigeon", description: str = "") -> Path:
    """The path of the shared library of ``source``, compiled now unless a valid one is cached."""
    compiler = find_compiler()
    if compiler is None:
        raise NoCompilerError("no C++ compiler with OpenMP found: install g++ (apt-get install g++) "
                              "or set CXX; the torch reference back end runs meanwhile")
    identity = _probe(compiler)
    key = _digest("\0".join([source, identity or "", " ".join(FLAGS), cpu_features()]).encode())[:32]
    folder = cache_dir() / "cpp"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{key}.manifest"
    found = _valid_entry(folder, manifest)
    if found is not None:
        return found
    src = folder / f"{key}.cpp"
    _write_atomic(src, source.encode())
    tmp = folder / f".{key}.{os.getpid()}.{threading.get_ident()}.so"
    result = subprocess.run([shutil.which(compiler) or compiler, *FLAGS, str(src), "-o", str(tmp)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        if tmp.exists():
            tmp.unlink()
        raise CppCompileError(f"{compiler} could not compile {name} ({src}):\n{result.stderr[-6000:]}"
                              + (f"\nfrom the plan:\n{description}" if description else ""))
    data = tmp.read_bytes()
    checksum = _digest(data)
    library = folder / f"{key}-{checksum[:16]}.so"  # named by its content: a loaded file is never replaced
    os.replace(tmp, library)
    _write_atomic(manifest, f"{MANIFEST_FORMAT}\n{library.name} {checksum}\n".encode())
    return library


def _valid_entry(folder: Path, manifest: Path) -> Path | None:
    """The cached library ``manifest`` names, if it is whole; None (with one warning unless the
    entry is missing) otherwise."""
    try:
        text = manifest.read_bytes().decode()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        warn_cache_file(manifest, f"unreadable ({err})")
        return None
    lines = text.splitlines()
    if not lines or lines[0] != MANIFEST_FORMAT:
        warn_cache_file(manifest, "not a manifest of this version of the cache format (another "
                                  "version's, or damaged)")
        return None
    fields = lines[1].split() if len(lines) == 2 else []
    if len(fields) != 2 or "/" in fields[0]:
        warn_cache_file(manifest, "damaged (no library name and checksum)")
        return None
    library = folder / fields[0]
    try:
        whole = _digest(library.read_bytes()) == fields[1]
    except OSError as err:
        warn_cache_file(library, f"unreadable ({err})")
        return None
    if not whole:
        warn_cache_file(library, "damaged (truncated or altered: its checksum does not match)")
        return None
    return library


_LOADED: dict[str, ctypes.CDLL] = {}
_LOCK = threading.Lock()


def load_library(source: str, name: str = "pigeon", description: str = "") -> ctypes.CDLL:
    """The loaded shared library of ``source`` (compiled or taken from the disk cache once per process)."""
    key = _digest(source.encode())
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = ctypes.CDLL(str(compile_library(source, name, description)))
        return _LOADED[key]
