"""Generated kernels on a real GPU, against the reference executor: forward and backward of the
three layers, the autograd Function, streams and the disk cache. Skipped where no GPU is present."""
import pytest
import torch

import pigeon
import pigeon.datasets
import pigeon.nn as pnn
from pigeon.runtime import cuda, kernel_cache

pytestmark = pytest.mark.gpu


def layers(g, feats=32):
    return {
        "rgcn": pnn.RGCNConv(feats, feats, g.num_etypes),
        "rgat": pnn.RGATConv(feats, feats // 4, g.num_etypes, num_heads=4),
        "hgt": pnn.HGTConv(feats, feats // 4, 4, g.num_ntypes, g.num_etypes),
    }


def hub_graph():
    """A few thousand edges into two destinations (beyond the default hub degree), many light ones."""
    gen = torch.Generator().manual_seed(3)
    n, light = 500, 3000
    src = torch.cat([torch.randint(0, n, (light,), generator=gen), torch.randint(0, n, (2500,), generator=gen),
                     torch.full((700,), 9)])
    dst = torch.cat([torch.randint(0, n, (light,), generator=gen), torch.full((2500,), 4), torch.full((700,), 9)])
    etype = torch.randint(0, 7, (src.numel(),), generator=gen)
    ntype = torch.randint(0, 3, (n,), generator=gen)
    return pigeon.Graph.from_edges(src, dst, etype, n, ntype, num_etypes=7, num_ntypes=3)


GRAPHS = {"aifb": lambda: pigeon.datasets.synthetic("aifb", scale=0.2, seed=1).graph, "hub": hub_graph}


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ["rgcn", "rgat", "hgt"])
def test_layers_on_the_gpu_match_the_reference(name, dtype, graph, tmp_path, monkeypatch):
    monkeypatch.setenv("PIGEON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kernel_cache.KERNELS, "_modules", {})  # compiled again, into this test's disk cache
    monkeypatch.setattr(cuda, "_PROGRAMS", {})
    torch.manual_seed(0)
    g = GRAPHS[graph]()
    layer = layers(g)[name].to(dtype)
    h = torch.randn(g.num_nodes, 32, dtype=dtype)
    with pigeon.use_backend("reference"):
        h_cpu = h.clone().requires_grad_()
        ref = layer(g, h_cpu)
        ref.sum().backward()
    ref_grads = {k: p.grad.clone() for k, p in layer.named_parameters()}
    layer.zero_grad()
    gpu_layer = layer.cuda()
    g_cuda = g.to("cuda")
    h_gpu = h.cuda().requires_grad_()
    out = gpu_layer(g_cuda, h_gpu)
    out.sum().backward()
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=tol, atol=tol * scale)
    with torch.no_grad():  # inference runs other kernels (hubs split over several blocks among them)
        torch.testing.assert_close(gpu_layer(g_cuda, h_gpu).cpu(), ref.detach(), rtol=tol, atol=tol * scale)
    torch.testing.assert_close(h_gpu.grad.cpu(), h_cpu.grad, rtol=tol, atol=tol * max(h_cpu.grad.abs().max().item(), 1))
    for k, p in gpu_layer.named_parameters():
        torch.testing.assert_close(p.grad.cpu(), ref_grads[k], rtol=tol, atol=tol * max(ref_grads[k].abs().max().item(), 1),
                                   msg=k)
    assert list(tmp_path.glob("*.ptx")), "the disk cache was not filled"


def test_kernels_run_on_the_current_stream():
    g = pigeon.datasets.synthetic("mutag", scale=0.05).graph.to("cuda")
    layer = pnn.RGCNConv(16, 16, g.num_etypes).cuda()
    h = torch.randn(g.num_nodes, 16, device="cuda")
    expected = layer(g, h)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = layer(g, h)
    stream.synchronize()
    torch.testing.assert_close(out, expected)


def test_reference_backend_on_cuda_tensors():
    g = pigeon.datasets.synthetic("aifb", scale=0.05).graph.to("cuda")
    layer = pnn.RGATConv(16, 8, g.num_etypes, num_heads=2).cuda()
    h = torch.randn(g.num_nodes, 16, device="cuda")
    with pigeon.use_backend("reference"):
        ref = layer(g, h)
    torch.testing.assert_close(layer(g, h), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())
