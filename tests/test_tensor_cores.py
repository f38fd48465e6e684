"""The typed segment GEMM on tensor cores (mma.sync): which plans take it, that its shared tiles
are free of bank conflicts, that ptxas builds it for sm_90, and that it computes the product
exactly (CUDA-on-CPU harness, whose mma is formed from the lanes' fragments as the PTX ISA
lays them out)."""
import contextlib
import dataclasses
import itertools
import shutil

import pytest
import torch

import pigeon
from pigeon.codegen import render, render_module
from pigeon.codegen.gemm import TensorCoreTile, tensor_core_tile, x_tile_pad
from pigeon.ir.lower import lower
from pigeon.ir.plans import GemmSchedule, PlanProgram, Strategy
from pigeon.lang import linear
from pigeon.runtime import kernel_cache
from random_graphs import random_graph



@contextlib.contextmanager
def tf32(allowed: bool):
    """torch's switch for TF32 in CUDA matmuls, set for the block (it is a process-wide flag)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@pigeon.compile
def typed_linear(g, h, weight):
    for n in g.nodes():
        n.y = linear(h[n], weight[n.ntype])
    return n.y


def _graph():
    # 150 nodes of 3 types: partial row tiles, a type with few rows
    g = random_graph(num_nodes=150, num_edges=300, num_etypes=2, seed=7)
    ntype = torch.tensor([0] * 100 + [1] * 45 + [2] * 5)
    return pigeon.Graph.from_edges(g.src, g.dst, g.etype, 150, ntype, num_etypes=2, num_ntypes=3)


def _inputs(dtype, k=48, n=40):
    """Small integers times powers of two: exact in 16 bits and TF32, and every product and sum
    of the GEMM exact in float32, so the result is the float64 formula's to the last bit."""
    gen = torch.Generator().manual_seed(11)
    h = torch.randint(-8, 9, (150, k), generator=gen).double() / 4
    weight = torch.randint(-8, 9, (3, k, n), generator=gen).double() / 8
    return h.to(dtype), weight.to(dtype)


def _gemm_plans(g, h, weight, **schedule):
    program = typed_linear.executable(g, h, weight).forward
    plans = lower(program)
    kernels = tuple(dataclasses.replace(p, schedule=dataclasses.replace(p.schedule, **schedule))
                    if p.strategy == Strategy.GEMM and schedule else p for p in plans.kernels)
    return PlanProgram(plans.name, plans.inputs, kernels, plans.outputs)


def _kernel_body(plan) -> str:
    return render(plan).source.split('extern "C"', 1)[1]  # after the common helpers


def test_tensor_cores_for_16_bit_and_for_float32_only_with_tf32():
    s = GemmSchedule()
    assert tensor_core_tile(s, 256, "pg_half").kind == "pg_half"
    assert tensor_core_tile(s, 256, "pg_bf16").kind == "pg_bf16"
    assert tensor_core_tile(s, 256, "double") is None
    with tf32(False):
        assert tensor_core_tile(s, 256, "float") is None  # exact float32 unless the user allows TF32
    with tf32(True):
        assert tensor_core_tile(s, 256, "float").kind == "tf32"
    assert tensor_core_tile(dataclasses.replace(s, tensor_cores=False), 256, "pg_half") is None
    assert tensor_core_tile(dataclasses.replace(s, tile_k=8), 256, "pg_half") is None  # k16 steps
    assert tensor_core_tile(s, 48, "pg_half") is None  # not whole warps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_rendered_gemms_take_tensor_cores(dtype):
    g = _graph()
    plans = _gemm_plans(g, *_inputs(dtype))
    gemm = next(p for p in plans.kernels if p.strategy == Strategy.GEMM)
    with tf32(False):
        assert ("pg_mma_16x8x" in _kernel_body(gemm)) == (dtype != torch.float32)
    with tf32(True):
        assert "pg_mma_16x8x" + ("8_tf32(" if dtype == torch.float32 else "16(") in _kernel_body(gemm)


def test_gemm_tiles_follow_the_output_width():
    g = _graph()
    for n, cols in ((8, 16), (16, 16), (24, 32), (40, 64), (200, 64)):
        plans = _gemm_plans(g, *_inputs(torch.float32, n=n))
        assert next(p for p in plans.kernels if p.strategy == Strategy.GEMM).schedule.tile_cols == cols


def _bank_conflicts(words_by_lane: list[int]) -> int:
    """How many more shared-memory wavefronts than one a warp's access takes (4-byte banks;
    lanes reading the same word share it)."""
    per_bank: dict[int, set[int]] = {}
    for word in words_by_lane:
        per_bank.setdefault(word % 32, set()).add(word)
    return max(len(w) for w in per_bank.values()) - 1


def _fragment_words(tile: TensorCoreTile):
    """The shared-memory words that warp 0's fragment loads read, per register (both halves of
    a 16-bit pair read from two k), and those that a warp's tile stores write."""
    size = 4 if tile.kind == "tf32" else 2
    lanes = [(lane // 4, lane % 4) for lane in range(32)]
    words = lambda elements: [e * size // 4 for e in elements]  # noqa: E731
    k_of = ((lambda q, r: q + 4 * r) if tile.kind == "tf32" else (lambda q, r: 2 * q + 8 * r))
    pair = (0,) if tile.kind == "tf32" else (0, 1)
    for r in range(4):  # A: row group + 8 (r & 1), k from r >> 1
        for half in pair:
            if tile.wgrad:  # k-major
                yield words([tile.k_slot(k_of(q, r >> 1) + half, "x") * tile.x_stride + g + 8 * (r & 1) for g, q in lanes])
            elif half == 0:  # row-major: a 16-bit pair is one word
                yield words([tile.row_slot(g + 8 * (r & 1)) * tile.x_stride + k_of(q, r >> 1) for g, q in lanes])
    for r in range(2):  # B, k-major: column group
        for half in pair:
            yield words([tile.k_slot(k_of(q, r) + half, "w") * tile.w_stride + g for g, q in lanes])
    a_rows, a_cols = (tile.tile_k, tile.tile_rows) if tile.wgrad else (tile.tile_rows, tile.tile_k)
    a_slot = (lambda o: tile.k_slot(o, "x")) if tile.wgrad else tile.row_slot
    for outer, inner, slot, stride in ((a_rows, a_cols, a_slot, tile.x_stride),
                                       (tile.tile_k, tile.tile_cols, lambda o: tile.k_slot(o, "w"), tile.w_stride)):
        for start in range(0, outer * inner, 32):  # stores: consecutive threads, the tile's inner index fastest
            yield words([slot(t // inner) * stride + t % inner for t in range(start, start + 32)])
        if size == 2:  # cp.async of 16-bit pairs: 8 rows by 4 pairs per warp
            for start in range(0, outer * inner // 2, 32):
                yield words([slot((t // (4 * inner)) * 8 + (t // 4) % 8) * stride + ((t // 32) % (inner // 8)) * 8
                             + 2 * (t % 4) for t in range(start, start + 32)])


def test_shared_tiles_have_no_bank_conflicts():
    checked = 0
    for kind, wgrad, rows, cols, k, threads in itertools.product(
            ("pg_half", "pg_bf16", "tf32"), (False, True), (16, 32, 64, 128), (16, 32, 64, 128), (8, 16, 32),
            (32, 64, 128, 256)):
        schedule = GemmSchedule(tile_rows=rows, tile_cols=cols, tile_k=k)
        with tf32(True):
            tile = tensor_core_tile(schedule, threads, "float" if kind == "tf32" else kind, wgrad)
        if tile is None:
            continue
        checked += 1
        for words in _fragment_words(tile):
            assert _bank_conflicts(words) == 0, (kind, wgrad, rows, cols, k, threads)
    assert checked > 200
    # the CUDA-core tile's x_tile store (k-major, a warp storing consecutive k of 32 / tile_k rows)
    for rows, k in itertools.product((16, 32, 64, 128), (8, 16, 32)):
        stride = rows + x_tile_pad(GemmSchedule(tile_rows=rows, tile_k=k))
        for start in range(0, rows * k, 32):
            assert _bank_conflicts([(t % k) * stride + t // k for t in range(start, start + 32)]) == 0, (rows, k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_tensor_core_gemms_build_for_sm90(dtype):
    """ptxas (sm_90 machine code) takes the mma instructions; forward and backward GEMMs, the
    weight gradient included, use no local memory."""
    g = _graph()
    h, weight = _inputs(dtype)
    exe = typed_linear.executable(g, h, weight)
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    for name, program in (("forward", exe.forward), ("backward", grad.backward)):
        source, kernels = render_module(lower(program))
        assert source.count("{}, d[mt][nt], a[mt], w[nt]);") == (1 if name == "forward" else 2)  # mma calls
        assert "pg_cp_async<4>(" in source and "pg_cp_async_wait<STAGES - 1>()" in source
        report = kernel_cache.kernel_resources(source, "sm_90", f"tensor_cores_{name}")
        assert set(report) == {k.name for k in kernels}
        for kernel, r in report.items():
            assert r.spill_bytes == 0 and r.stack_bytes == 0 and r.registers <= 128, (kernel, r)


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA-on-CPU harness needs g++")
@pytest.mark.parametrize("schedule", [{}, {"tile_rows": 32, "tile_cols": 32, "tile_k": 32, "thread_rows": 2},
                                      {"tile_rows": 128, "tile_cols": 16, "thread_rows": 8, "thread_cols": 2}],
                         ids=["default", "square", "tall"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_tensor_core_gemm_is_exact(dtype, schedule):
    """On inputs whose products and sums are exact in float32, the mma's result is the float64
    formula's; a fragment read from the wrong row, column or half of a register changes it."""
    from cuda_cpu.runner import HarnessProgram
    g = _graph()
    h, weight = _inputs(dtype)
    with tf32(True):
        plans = _gemm_plans(g, h, weight, **schedule)
        gemm = next(p for p in plans.kernels if p.strategy == Strategy.GEMM)
        assert "pg_mma_16x8x" in _kernel_body(gemm)
        (out,) = HarnessProgram(plans)(g, h, weight)
    expected = torch.einsum("nk,nko->no", h.double(), weight.double()[g.ntype])
    assert torch.equal(out.double(), expected.to(dtype).double())


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA-on-CPU harness needs g++")
@pytest.mark.parametrize("schedule", [{}, {"tile_rows": 16, "tile_cols": 16, "tile_k": 32, "thread_rows": 2,
                                           "thread_cols": 4}], ids=["default", "narrow"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_tensor_core_gradients_are_exact(dtype, schedule):
    """The backward GEMMs on tensor cores: dh = dy W^T (a transposed typed GEMM) and the weight
    gradient dW[type] = h^T dy over the type's rows, to the last bit on exact inputs."""
    from cuda_cpu.runner import HarnessProgram
    g = _graph()
    h, weight = _inputs(dtype, k=32, n=24)
    upstream = (torch.randint(-8, 9, (150, 24), generator=torch.Generator().manual_seed(12)).double() / 4).to(dtype)
    exe = typed_linear.executable(g, h, weight)
    grad = exe.gradient(tuple(n.name for n in exe.forward.inputs))
    with tf32(True):
        forward = HarnessProgram(lower(grad.forward))(g, h, weight)
        plans = lower(grad.backward)
        plans = PlanProgram(plans.name, plans.inputs, tuple(
            dataclasses.replace(p, schedule=dataclasses.replace(p.schedule, **schedule))
            if p.strategy in (Strategy.GEMM, Strategy.WGRAD) and schedule else p for p in plans.kernels), plans.outputs)
        bodies = [_kernel_body(p) for p in plans.kernels if p.strategy in (Strategy.GEMM, Strategy.WGRAD)]
        assert len(bodies) == 2 and all("pg_mma_16x8x" in b for b in bodies)
        grads = HarnessProgram(plans)(g, *forward[grad.num_outputs:], upstream)
    dh, dweight = grads
    h64, w64, dy64 = h.double(), weight.double(), upstream.double()
    assert torch.equal(dh.double(), torch.einsum("no,nko->nk", dy64, w64[g.ntype]).to(dtype).double())
    expected = torch.zeros_like(w64).index_add_(0, g.ntype, torch.einsum("nk,no->nko", h64, dy64))
    assert torch.equal(dweight.double(), expected.to(dtype).double())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_tiles_are_copied_asynchronously_in_two_stages(dtype):
    """Inputs read as stored go to shared memory by cp.async (16-bit ones in pairs), the next
    k-tile while this one is multiplied; tiles too big for two stages in static shared memory
    take one."""
    g = _graph()
    with tf32(True):
        gemm = next(p for p in _gemm_plans(g, *_inputs(dtype)).kernels if p.strategy == Strategy.GEMM)
        body = _kernel_body(gemm)
        assert body.count("pg_cp_async<4>(&x_stage[") == 2 and body.count("pg_cp_async<4>(&w_stage[") == 2
        assert "constexpr int STAGES = 2;" in body and "(stage + 1) % STAGES" in body
        big = dataclasses.replace(GemmSchedule(), tile_rows=128, tile_cols=128, tile_k=32)
        tile = tensor_core_tile(big, 256, "pg_half" if dtype == torch.float16 else "float")
        assert tile.stages == (2 if tile.stage_bytes() * 2 <= 48 * 1024 else 1)
        assert tile.shared_bytes() <= 48 * 1024


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA-on-CPU harness needs g++")
@pytest.mark.parametrize("mutation", [("pg_cp_async_wait<STAGES - 1>();", "pg_cp_async_wait<STAGES>();"),
                                      ("pg_cp_async_wait<STAGES - 1>();", ";")], ids=["waits-too-little", "no-wait"])
def test_the_harness_sees_a_tile_read_before_its_copy_lands(mutation):
    """The harness makes a cp.async copy only when a wait covers it: a kernel that multiplies a
    k-tile before waiting for it gives wrong numbers there (it would on a GPU, now and then)."""
    from cuda_cpu.runner import HarnessProgram
    g = _graph()
    h, weight = _inputs(torch.float16)
    plans = _gemm_plans(g, h, weight)
    expected = torch.einsum("nk,nko->no", h.double(), weight.double()[g.ntype]).to(torch.float16)
    (out,) = HarnessProgram(plans)(g, h, weight)
    assert torch.equal(out, expected)
    old, new = mutation
    (wrong,) = HarnessProgram(plans, edit=lambda source: source.replace(old, new))(g, h, weight)
    assert not torch.equal(wrong, expected)
