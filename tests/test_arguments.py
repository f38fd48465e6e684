"""Arguments of compiled functions: lists and dicts of weights (ParameterList / ParameterDict
too) indexed by constants, and one clear error for arguments that cannot be inputs."""
import pytest
import torch

import pigeon
from pigeon.lang import linear, sum
from random_graphs import random_graph


@pigeon.compile
def two_weights(g, h, weights, extra):
    for e in g.edges():
        e.m = linear(h[e.src], weights[0][e.etype]) + linear(h[e.src], weights[1][e.etype]) * extra["scale"]
    for n in g.dst_nodes():
        n.out = sum(e.m for e in n.incoming_edges())
    return n.out


def two_weights_formula(g, h, w0, w1, scale):
    x = h[g.src].unsqueeze(1)
    m = torch.bmm(x, w0[g.etype]).squeeze(1) + torch.bmm(x, w1[g.etype]).squeeze(1) * scale
    return torch.zeros(g.num_nodes, m.shape[1], dtype=m.dtype).index_add(0, g.dst, m)


@pytest.mark.parametrize("kind", ["list", "tuple", "ParameterList"])
@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_weights_in_a_list_or_dict(kind, backend):
    g = random_graph(num_etypes=6, seed=3)
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(g.num_nodes, 4, dtype=torch.float64, generator=gen).requires_grad_()
    w = [torch.randn(6, 4, 3, dtype=torch.float64, generator=gen).requires_grad_() for _ in range(2)]
    scale = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
    weights = {"list": list, "tuple": tuple, "ParameterList": lambda ws: torch.nn.ParameterList(
        [torch.nn.Parameter(x.detach().clone()) for x in ws])}[kind](w)
    extra = {"scale": scale} if kind != "ParameterList" else torch.nn.ParameterDict({"scale": scale.detach().clone()})
    with pigeon.use_backend(backend):
        out = two_weights(g, h, weights, extra)
    leaves = [h, *weights, extra["scale"]]
    refs = [x.detach().clone().requires_grad_() for x in leaves]
    ref = two_weights_formula(g, *refs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)  # float64: summation order only
    up = torch.randn(ref.shape, dtype=torch.float64, generator=gen)
    for got, want in zip(torch.autograd.grad((out * up).sum(), leaves), torch.autograd.grad((ref * up).sum(), refs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_dtype_mix_names_the_arguments():
    g = random_graph(num_etypes=6, seed=3)
    w = [torch.randn(6, 4, 3, dtype=torch.float64) for _ in range(2)]
    with pytest.raises(pigeon.TraceError, match=r"float32: h; float64: weights_0, weights_1, extra_scale"):
        two_weights(g, torch.randn(g.num_nodes, 4), w, {"scale": torch.randn(3, dtype=torch.float64)})


def test_a_numpy_argument_is_named_not_printed():
    g = random_graph(num_etypes=6, seed=3)
    w = [torch.randn(6, 4, 3) for _ in range(2)]
    with pytest.raises(TypeError) as info:
        two_weights(g, torch.randn(g.num_nodes, 4).numpy(), w, {"scale": torch.randn(3)})
    message = str(info.value)
    assert "argument h is a ndarray of shape [40, 4]" in message and "torch.from_numpy" in message
    assert "\n" not in message and "[[" not in message  # the type and shape, never the contents


def test_an_integer_tensor_is_named():
    g = random_graph(num_etypes=6, seed=3)
    w = [torch.randn(6, 4, 3) for _ in range(2)]
    with pytest.raises(pigeon.TraceError, match=r"h\[e.src\] is an id of h \(int64\), not floating point"):
        two_weights(g, torch.ones(g.num_nodes, 4, dtype=torch.long), w, {"scale": torch.randn(3)})
