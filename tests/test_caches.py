"""The disk caches (C++ libraries, NVRTC PTX, tuning entries): several processes filling and
reading them at once never see a partial file; a truncated, altered or other-version file gives
one CacheWarning and is rebuilt."""
import json
import multiprocessing
import os
import warnings

import pytest

from pigeon.runtime import cpp_compiler, kernel_cache
from pigeon.runtime.kernel_cache import CacheWarning
from pigeon.runtime.tuning import DEFAULT, TUNING_FORMAT, Config, TuningCache

CPP_SOURCES = [f'extern "C" int answer(int x) {{ return x + {k}; }}\n' for k in (41, 7)]
PTX_SOURCE = 'extern "C" __global__ void scale(float* x) { x[threadIdx.x] *= 2.0f; }\n'
ROUNDS = 12


def _nvrtc_missing() -> str | None:
    try:
        kernel_cache.toolchain_version()
    except ImportError as err:
        return str(err)
    return None


def _fill_and_read(args):
    """One of the processes: compile and load the same libraries and PTX, store and read the same
    tuning entries, starting together with the others; returns what it got and every warning."""
    directory, barrier, worker, with_ptx = args
    os.environ["PIGEON_CACHE_DIR"] = directory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        barrier.wait(timeout=300)
        answers = [cpp_compiler.load_library(source).answer(2) for source in CPP_SOURCES]
        ptx = kernel_cache.cached_ptx(PTX_SOURCE, "compute_80") if with_ptx else ""
        cache = TuningCache()
        tuned = Config(disabled=frozenset({"compact"}))
        for i in range(ROUNDS):
            cache.store("shared", {"config": tuned.to_json(), "by": worker})
            cache.store(f"key-{worker}-{i}", {"config": DEFAULT.to_json(), "round": i})
            assert cache.lookup("shared") == tuned
            assert cache.lookup(f"key-{worker}-{i}") == DEFAULT
            assert len(cache.entries()) >= i + 2
    return answers, ptx, [f"{w.category.__name__}: {w.message}" for w in caught]


def test_four_processes_fill_and_read_the_caches_at_once(tmp_path):
    with_ptx = _nvrtc_missing() is None
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        barrier = manager.Barrier(4)
        results = pool.map(_fill_and_read, [(str(tmp_path), barrier, w, with_ptx) for w in range(4)], chunksize=1)
    for answers, _, caught in results:
        assert answers == [43, 9]
        assert caught == []  # a partial file read would have been reported as damaged
    assert len({ptx for _, ptx, _ in results}) == 1
    if with_ptx:
        assert ".entry scale(" in results[0][1] and len(list(tmp_path.glob("*.ptx"))) == 1
    assert len(list((tmp_path / "cpp").glob("*.manifest"))) == len(CPP_SOURCES)
    entries = TuningCache(tmp_path / "tuning.json").entries()
    assert set(entries) == {"shared"} | {f"key-{w}-{i}" for w in range(4) for i in range(ROUNDS)}
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.glob("*corrupt*"))


def _one_cache_warning(record, path) -> str:
    messages = [str(w.message) for w in record if issubclass(w.category, CacheWarning)]
    assert len(messages) == 1, messages
    assert str(path) in messages[0]
    return messages[0]


class no_warnings(warnings.catch_warnings):
    """Inside: any warning is an error."""

    def __enter__(self):
        super().__enter__()
        warnings.simplefilter("error")


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


# the C++ library cache ---------------------------------------------------------------------


@pytest.fixture
def cpp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    cpp_compiler._LOADED.clear()
    yield tmp_path / "cpp"
    cpp_compiler._LOADED.clear()


CPP_DAMAGE = {
    "truncated_library": lambda library, manifest: library.write_bytes(library.read_bytes()[:300]),
    "altered_library": lambda library, manifest: _flip_middle_byte(library),
    "missing_library": lambda library, manifest: library.unlink(),
    "truncated_manifest": lambda library, manifest: manifest.write_bytes(manifest.read_bytes()[:25]),
    "binary_manifest": lambda library, manifest: manifest.write_bytes(b"\xff\xfe\x00garbage"),
    "old_format_manifest": lambda library, manifest: manifest.write_text(
        manifest.read_text().splitlines()[1] + "\n"),  # version 1: the name and checksum alone
    "other_version_manifest": lambda library, manifest: manifest.write_text(
        manifest.read_text().replace(cpp_compiler.MANIFEST_FORMAT, "pigeon-cpp-cache 3")),
}


@pytest.mark.parametrize("damage", CPP_DAMAGE)
def test_a_damaged_cpp_cache_entry_is_reported_once_and_rebuilt(cpp_cache, damage):
    library = cpp_compiler.compile_library(CPP_SOURCES[0])
    (manifest,) = cpp_cache.glob("*.manifest")
    CPP_DAMAGE[damage](library, manifest)
    with pytest.warns(CacheWarning) as record:
        rebuilt = cpp_compiler.compile_library(CPP_SOURCES[0])
    damaged = library if damage.endswith("library") else manifest
    _one_cache_warning(record, damaged)
    assert cpp_compiler.ctypes.CDLL(str(rebuilt)).answer(1) == 42
    with no_warnings():
        built_at = rebuilt.stat().st_mtime_ns
        assert cpp_compiler.compile_library(CPP_SOURCES[0]) == rebuilt  # whole again: taken as it is
        assert rebuilt.stat().st_mtime_ns == built_at


def test_a_missing_cpp_cache_entry_is_built_without_a_warning(cpp_cache):
    with no_warnings():
        assert cpp_compiler.ctypes.CDLL(str(cpp_compiler.compile_library(CPP_SOURCES[1]))).answer(1) == 8


# the NVRTC PTX cache ---------------------------------------------------------------------------


def _old_format(path):
    body = path.read_bytes().decode().partition("\n")[2]
    path.write_text("// pigeon-checksum " + kernel_cache._checksum(body) + "\n" + body)  # version 1


PTX_DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:200]),
    "altered": _flip_middle_byte,
    "binary": lambda path: path.write_bytes(b"\xff\xfe\x00" + path.read_bytes()),
    "no_header": lambda path: path.write_bytes(path.read_bytes().partition(b"\n")[2]),
    "old_format": _old_format,
}


@pytest.mark.parametrize("damage", PTX_DAMAGE)
def test_a_damaged_ptx_cache_entry_is_reported_once_and_rebuilt(tmp_path, monkeypatch, damage):
    missing = _nvrtc_missing()
    if missing:
        pytest.skip(missing)
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    compiles = []
    real = kernel_cache.compile_ptx
    monkeypatch.setattr(kernel_cache, "compile_ptx", lambda *a, **k: compiles.append(1) or real(*a, **k))
    first = kernel_cache.cached_ptx(PTX_SOURCE, "compute_80")
    (entry,) = tmp_path.glob("*.ptx")
    PTX_DAMAGE[damage](entry)
    with pytest.warns(CacheWarning) as record:
        assert kernel_cache.cached_ptx(PTX_SOURCE, "compute_80") == first
    message = _one_cache_warning(record, entry)
    assert ("another version" in message) == (damage == "old_format")
    assert len(compiles) == 2
    with no_warnings():
        assert kernel_cache.cached_ptx(PTX_SOURCE, "compute_80") == first and len(compiles) == 2


# the tuning cache ------------------------------------------------------------------------------


def _replace_json(path, change):
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


TUNING_DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:40]),
    "altered": lambda path: path.write_text(path.read_text().replace('"round": 1', '"round": 7')),
    "binary": lambda path: path.write_bytes(b"\xff\xfe" + path.read_bytes()),
    "old_format": lambda path: _replace_json(path, lambda content: content["entries"]),  # version 1: entries alone
    "other_version": lambda path: _replace_json(path, lambda content: {**content, "format": "pigeon-tuning 3"}),
    "not_entries": lambda path: _replace_json(path, lambda content: [content]),
}


@pytest.mark.parametrize("damage", TUNING_DAMAGE)
def test_a_damaged_tuning_cache_is_reported_once_set_aside_and_rebuilt(tmp_path, damage):
    path = tmp_path / "tuning.json"
    TuningCache(path).store("a", {"config": DEFAULT.to_json(), "round": 1})
    TUNING_DAMAGE[damage](path)
    reader = TuningCache(path)
    with pytest.warns(CacheWarning) as record:
        assert reader.lookup("a") is None
        assert reader.lookup("a") is None  # reported once, not on every look-up
    message = _one_cache_warning(record, path)
    assert ("another version" in message) == (damage in ("old_format", "other_version", "not_entries"))
    assert len(list(tmp_path.glob("tuning.corrupt-*.json"))) == 1
    reader.store("b", {"config": DEFAULT.to_json()})
    with no_warnings():
        fresh = TuningCache(path)
        assert set(fresh.entries()) == {"b"} and fresh.lookup("b") == DEFAULT
        assert json.loads(path.read_text())["format"] == TUNING_FORMAT


def _look_up_at_once(args):
    path, barrier = args
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        barrier.wait(timeout=300)
        found = TuningCache(path).lookup("a")
    return found, [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


def test_processes_meeting_a_damaged_tuning_cache_at_once_report_it_once(tmp_path):
    path = tmp_path / "tuning.json"
    TuningCache(path).store("a", {"config": DEFAULT.to_json(), "round": 1})
    TUNING_DAMAGE["truncated"](path)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        barrier = manager.Barrier(4)
        results = pool.map(_look_up_at_once, [(str(path), barrier)] * 4, chunksize=1)
    assert [found for found, _ in results] == [None] * 4
    assert sum(len(messages) for _, messages in results) == 1  # the process that set it aside
    assert len(list(tmp_path.glob("tuning.corrupt-*.json"))) == 1
