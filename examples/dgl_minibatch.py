"""Minibatch training of a two-layer RGCN with DGL's neighbour sampler: a DGL training loop in
which the only change is the layer class (``pigeon.nn.RGCNConv`` for ``dgl.nn.RelGraphConv``).

    python examples/dgl_minibatch.py [--dataset aifb] [--scale 0.25] [--epochs 5]

Needs DGL (the DGL environment: torch 2.2 + dgl 2.1, see benchmarks/make_envs.sh).
"""
from __future__ import annotations

import argparse
import time

import dgl
import torch
from torch import nn

import pigeon.datasets
import pigeon.nn as pnn


class Net(nn.Module):
    def __init__(self, in_feats: int, hidden: int, num_classes: int, num_rels: int):
        super().__init__()
        # with DGL: dgl.nn.RelGraphConv(in_feats, hidden, num_rels, self_loop=True) and
        # calls layer(block, h, block.edata[dgl.ETYPE], norm=block.edata["norm"])
        self.conv1 = pnn.RGCNConv(in_feats, hidden, num_rels)
        self.conv2 = pnn.RGCNConv(hidden, num_classes, num_rels)

    def forward(self, blocks: list, h: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(blocks[0], h))
        return self.conv2(blocks[1], h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="aifb")
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--fanouts", type=int, nargs=2, default=[10, 10])
    args = parser.parse_args()
    torch.manual_seed(0)

    data = pigeon.datasets.load(args.dataset, scale=args.scale, feat_dim=32)
    pg = data.graph
    g = dgl.graph((pg.src, pg.dst), num_nodes=pg.num_nodes)
    g.edata[dgl.ETYPE] = pg.etype
    g.ndata[dgl.NTYPE] = pg.ntype
    train_ids = torch.nonzero(data.train_mask).flatten()
    sampler = dgl.dataloading.NeighborSampler(args.fanouts)
    loader = dgl.dataloading.DataLoader(g, train_ids, sampler, batch_size=args.batch_size, shuffle=True)
    net = Net(data.features.shape[1], 32, data.num_classes, pg.num_etypes)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    print(f"RGCN minibatch training on {data.name}: {pg}, {len(loader)} batches per epoch")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total, count = 0.0, 0
        for input_nodes, output_nodes, blocks in loader:
            logits = net(blocks, data.features[input_nodes])
            loss = nn.functional.cross_entropy(logits, data.labels[output_nodes])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(output_nodes)
            count += len(output_nodes)
        print(f"epoch {epoch:3d}  loss {total / count:.4f}  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
