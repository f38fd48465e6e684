"""Configurations of a compiled program and the persistent tuning cache.

A ``Config`` is every choice Pigeon makes for a program beyond its semantics: passes switched
off, values compaction leaves per edge, how reductions into destinations run, whether
independent kernels merge, and kernel schedules. The tuning cache (``tuning.json`` in the
runtime's cache folder) maps (program, graph signature, device, dtype, back end, mode with the
inputs that get gradients, a hash of the compiler's source) to the best configuration found by
``pigeon tune``; compiled functions look it up on every call.

The file holds its format version, the entries and their checksum. Writers hold a file lock
and rename a complete temporary file into place, so readers (which take no lock) never see a
partial file; a truncated, altered or other-version file is reported with one ``CacheWarning``,
set aside and started afresh.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from pigeon.ir.plans import Schedule
from pigeon.ir.printer import format_program
from pigeon.ir.program import Program

from . import layouts
from .graph import Graph
from .kernel_cache import cache_dir, warn_cache_file

TUNING_FORMAT = "pigeon-tuning 2"


@dataclass(frozen=True)
class Config:
    disabled: frozenset[str] = frozenset()  # passes switched off
    keep_on_edges: frozenset[str] = frozenset()  # values compaction leaves per edge
    dst_reductions: str = "segmented"  # or "atomic" (edge-parallel with atomics where allowed)
    horizontal: bool = True  # independent kernels merge
    schedules: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = ()  # (program, kernel, knobs)

    def schedules_for(self, program_name: str, defaults: dict[str, Schedule]) -> dict[str, Schedule]:
        """The schedule overrides of one program's kernels (by kernel name). A schedule for a
        kernel the program does not have, or a knob its schedule lacks, is an error: the
        configuration was made for other code."""
        out = {}
        for prog, kernel, knobs in self.schedules:
            if prog != program_name:
                continue
            if kernel not in defaults:
                raise ValueError(f"the configuration schedules kernel {kernel!r} of program {program_name!r}, "
                                 f"which has no such kernel (its kernels: {', '.join(defaults) or 'none'})")
            unknown = sorted(set(dict(knobs)) - set(defaults[kernel].knobs()))
            if unknown:
                raise ValueError(f"the configuration sets {unknown} on kernel {kernel!r} of program "
                                 f"{program_name!r}, whose schedule has no such knob")
            out[kernel] = dataclasses.replace(defaults[kernel], **dict(knobs))
        return out

    def describe(self) -> str:
        parts = []
        if self.disabled:
            parts.append("without " + ", ".join(sorted(self.disabled)))
        if self.keep_on_edges:
            parts.append("per edge: " + ", ".join(sorted(self.keep_on_edges)))
        if self.dst_reductions != "segmented":
            parts.append(f"{self.dst_reductions} destination reductions")
        if not self.horizontal:
            parts.append("no horizontal fusion")
        for prog, kernel, knobs in self.schedules:
            parts.append(f"{kernel}: " + " ".join(f"{k}={v}" for k, v in knobs))
        return "; ".join(parts) or "defaults"

    def to_json(self) -> dict[str, Any]:
        return {"disabled": sorted(self.disabled), "keep_on_edges": sorted(self.keep_on_edges),
                "dst_reductions": self.dst_reductions, "horizontal": self.horizontal,
                "schedules": [[p, k, [list(kv) for kv in knobs]] for p, k, knobs in self.schedules]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        return cls(frozenset(data["disabled"]), frozenset(data["keep_on_edges"]), data["dst_reductions"],
                   bool(data["horizontal"]),
                   tuple((p, k, tuple((a, b) for a, b in knobs)) for p, k, knobs in data["schedules"]))

    def merged(self, disabled: frozenset[str]) -> Config:
        return dataclasses.replace(self, disabled=self.disabled | disabled) if disabled else self


DEFAULT = Config()


def _bucket(x: float) -> int:
    return round(2 * math.log2(max(x, 1.0)))


def graph_signature(g: Graph) -> tuple[int, ...]:
    """Graph sizes bucketed to half powers of two, the type counts, and degree statistics:
    graphs alike in these share tuning entries."""
    def build() -> tuple[int, ...]:
        stats = layouts.graph_stats(g)
        dst = layouts.arrays(g).dst
        degrees = torch.bincount(dst, minlength=g.num_dst_nodes).float() if g.num_edges else torch.zeros(1)
        spread = _bucket(float(degrees.std())) if degrees.numel() > 1 else 0
        return stats.bucket() + (g.num_etypes, g.num_ntypes, _bucket(float(degrees.mean())),
                                 _bucket(float(degrees.max())), spread)
    return g.cached("signature", build)


@functools.lru_cache(maxsize=None)
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


_HASHES: dict[int, tuple[Program, str]] = {}


def program_hash(program: Program) -> str:
    """A hash of the program's text (computed once per program object)."""
    hit = _HASHES.get(id(program))
    if hit is None or hit[0] is not program:
        hit = _HASHES[id(program)] = (program, hashlib.sha256(format_program(program).encode()).hexdigest()[:16])
    return hit[1]


def source_digest(folders: list[Path]) -> str:
    """A hash of the compiler source files (Python, templates, headers) under ``folders``."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".py", ".j2", ".cuh", ".h") and "__pycache__" not in path.parts:
                digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def compiler_folders() -> list[Path]:
    """The folders of the compiler's own source: the front end, the passes and lowering, code
    generation, the templates and the runtime."""
    import pigeon
    import pigeon.codegen
    import pigeon.ir
    import pigeon.runtime
    import pigeon.templates

    return [Path(package.__file__).parent for package in (pigeon, pigeon.ir, pigeon.codegen, pigeon.runtime,
                                                          pigeon.templates)]


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """A hash of the compiler's own source (passes, code generation, templates, runtime): tuning
    entries made by other code are not used."""
    return source_digest(compiler_folders())


def tuning_key(program: Program, g: Graph, dtype: str, mode: str, backend: str, wrt: tuple[str, ...] = ()) -> str:
    """What a tuning entry is for: the program, the graph's shape, the device, dtype and back end,
    inference or training (with the inputs that get gradients), and the compiler's code."""
    trained = "train[" + ",".join(sorted(wrt)) + "]" if mode == "train" else mode
    parts = [program_hash(program), ",".join(map(str, graph_signature(g))), device_name(g.device), dtype, backend,
             trained, code_version()]
    return "|".join(parts)


def _entries_checksum(entries: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _parse(data: bytes) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The entries of a tuning file's bytes, and what is wrong with them (None: nothing)."""
    try:
        content = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as err:
        return {}, f"unreadable ({err})"
    if not isinstance(content, dict) or content.get("format") != TUNING_FORMAT:
        return {}, "from another version of the format"
    entries = content.get("entries")
    if not isinstance(entries, dict) or content.get("checksum") != _entries_checksum(entries):
        return {}, "damaged (its checksum does not match)"
    if not all(isinstance(v, dict) for v in entries.values()):
        return {}, "damaged (not a mapping of entries)"
    return entries, None


class TuningCache:
    """The tuning entries on disk, read again whenever the file changes."""

    def __init__(self, path: str | Path | None = None):
        self._path = Path(path) if path is not None else None
        self._entries: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int, int] | None = None

    @property
    def path(self) -> Path:
        return self._path or cache_dir() / "tuning.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        """Which version of the file is there (None: none); a rename makes a new inode."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _read(self, locked: bool = False) -> dict[str, dict[str, Any]]:
        """The entries, read again if the file changed; ``locked``: the caller holds the lock."""
        stamp = self._file_stamp()
        if stamp is None:
            self._entries, self._stamp = {}, None
        elif stamp != self._stamp:
            try:
                entries, problem = _parse(self.path.read_bytes())
            except FileNotFoundError:  # replaced or set aside since the stat: read it next time
                return self._entries
            if problem is not None:
                self._set_aside(stamp, problem, locked)
            self._entries, self._stamp = entries, stamp
        return self._entries

    def _set_aside(self, stamp: tuple[int, int, int], problem: str, locked: bool) -> None:
        """Move the unusable file out of the way, unless another process replaced it meanwhile."""
        with contextlib.nullcontext() if locked else self._locked():
            if self._file_stamp() != stamp:
                return
            aside = self.path.with_name(f"{self.path.stem}.corrupt-{int(time.time())}-{os.getpid()}.json")
            try:
                os.replace(self.path, aside)
            except OSError as err:
                warn_cache_file(self.path, problem, f"ignoring it (it could not be set aside: {err})")
                return
        warn_cache_file(self.path, problem, f"set aside as {aside.name}, starting an empty one")

    def entries(self) -> dict[str, dict[str, Any]]:
        return dict(self._read())

    def lookup(self, key: str) -> Config | None:
        entry = self._read().get(key)
        if entry is None:
            return None
        try:
            return Config.from_json(entry["config"])
        except (KeyError, TypeError, ValueError):
            return None

    def store(self, key: str, entry: dict[str, Any]) -> None:
        """Add an entry; safe with other processes storing at the same time."""
        with self._locked():
            self._stamp = None
            entries = {**self._read(locked=True), key: entry}
            content = {"format": TUNING_FORMAT, "checksum": _entries_checksum(entries), "entries": entries}
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tuning.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(content, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            self._stamp = None

    def clear(self) -> int:
        with self._locked():
            count = len(self._read(locked=True))
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._entries, self._stamp = {}, None
        return count


CACHE = TuningCache()


def schedule_knobs(schedule: Schedule) -> tuple[tuple[str, Any], ...]:
    """The knobs of ``schedule`` that differ from its kind's defaults."""
    default = type(schedule)()
    return tuple((k, v) for k, v in schedule.knobs().items() if getattr(default, k) != v)
