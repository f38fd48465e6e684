"""DGL's own RGCN entity-classification example with neighbour sampling
(``examples/pytorch/rgcn/entity_sample.py`` of DGL) with the layer import changed to
``pigeon.nn.dgl``; the model (an embedding table and two basis-decomposed ``RelGraphConv``
layers called on sampled blocks with ``dgl.norm_by_dst``), the sampler, the training and the
evaluation are DGL's.

    python examples/dgl_minibatch.py [--dataset aifb] [--scale 1.0] [--epochs 50]

Other changes, because nothing can be downloaded here: ``AIFBDataset`` and its siblings (which
download the RDF graphs) are replaced by ``SyntheticRDFDataset``, a seeded heterograph with the
shape of the named data set from ``pigeon.datasets.synthetic`` (predict category: node type 1,
split and labelled by the generator); ``--scale`` shrinks that graph and ``--epochs`` the run
(DGL: 50); accuracy is computed here where torchmetrics is not installed; and the script seeds
torch, numpy (DGL's DataLoader shuffles with numpy's generator) and DGL, so that the same script
with DGL's import starts from the same weights and draws the same batches (DGL's neighbour
sampler draws differently from run to run on several threads: OMP_NUM_THREADS=1 makes it
repeatable). Needs DGL (the DGL environment: torch 2.2 + dgl 2.1).
"""
import argparse

import dgl
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from dgl.dataloading import DataLoader, MultiLayerNeighborSampler

import pigeon.datasets
from pigeon.nn.dgl import RelGraphConv  # was: from dgl.nn.pytorch import RelGraphConv

try:
    from torchmetrics.functional import accuracy
except ImportError:
    def accuracy(preds, target, task="multiclass", num_classes=None):
        return (preds == target).float().mean()


class SyntheticRDFDataset:
    """Stands in for ``dgl.data.rdf.AIFBDataset`` and its siblings: ``[0]`` is a heterograph
    whose ``predict_category`` nodes hold ``labels``, ``train_mask`` and ``test_mask``;
    ``num_classes``. The graph is the synthetic graph of that name (``pigeon.datasets``)."""

    def __init__(self, name, scale=1.0):
        ds = pigeon.datasets.synthetic(name, scale=scale, feat_dim=1, num_classes=4)
        pg = ds.graph
        counts = torch.bincount(pg.ntype, minlength=pg.num_ntypes)
        offsets = torch.cumsum(counts, 0) - counts  # node types hold consecutive global ids
        src, dst, etype = pg.src, pg.dst, pg.etype
        edges = {}
        for r, (stype, rel, dtype) in enumerate(pg.canonical_etypes):
            mask = etype == r
            s, d = pg.ntype_names.index(stype), pg.ntype_names.index(dtype)
            edges[(stype, rel, dtype)] = (src[mask] - offsets[s], dst[mask] - offsets[d])
        g = dgl.heterograph(edges, num_nodes_dict={t: int(c) for t, c in zip(pg.ntype_names, counts)})
        self.predict_category = pg.ntype_names[min(1, pg.num_ntypes - 1)]
        nodes = pg.ntype == pg.ntype_names.index(self.predict_category)
        g.nodes[self.predict_category].data["labels"] = ds.labels[nodes]
        g.nodes[self.predict_category].data["train_mask"] = ds.train_mask[nodes]
        g.nodes[self.predict_category].data["test_mask"] = ds.test_mask[nodes]
        self.graph, self.num_classes = g, ds.num_classes

    def __getitem__(self, i):
        return self.graph


class RGCN(nn.Module):
    def __init__(self, num_nodes, h_dim, out_dim, num_rels):
        super().__init__()
        self.emb = nn.Embedding(num_nodes, h_dim)
        # two-layer RGCN
        self.conv1 = RelGraphConv(
            h_dim,
            h_dim,
            num_rels,
            regularizer="basis",
            num_bases=num_rels,
            self_loop=False,
        )
        self.conv2 = RelGraphConv(
            h_dim,
            out_dim,
            num_rels,
            regularizer="basis",
            num_bases=num_rels,
            self_loop=False,
        )

    def forward(self, g):
        x = self.emb(g[0].srcdata[dgl.NID])
        h = F.relu(
            self.conv1(g[0], x, g[0].edata[dgl.ETYPE], g[0].edata["norm"])
        )
        h = self.conv2(g[1], h, g[1].edata[dgl.ETYPE], g[1].edata["norm"])
        return h


def evaluate(model, labels, num_classes, dataloader, inv_target):
    model.eval()
    eval_logits = []
    eval_seeds = []
    with torch.no_grad():
        for input_nodes, output_nodes, blocks in dataloader:
            output_nodes = inv_target[output_nodes]
            for block in blocks:
                block.edata["norm"] = dgl.norm_by_dst(block).unsqueeze(1)
            logits = model(blocks)
            eval_logits.append(logits.cpu().detach())
            eval_seeds.append(output_nodes.cpu().detach())
    eval_logits = torch.cat(eval_logits)
    eval_seeds = torch.cat(eval_seeds)
    return accuracy(
        eval_logits.argmax(dim=1),
        labels[eval_seeds].cpu(),
        task="multiclass",
        num_classes=num_classes,
    ).item()


def train(device, g, target_idx, labels, train_mask, num_classes, model, epochs=50):
    # define train idx, loss function and optimizer
    train_idx = torch.nonzero(train_mask, as_tuple=False).squeeze()
    loss_fcn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=5e-4)
    # construct sampler and dataloader
    sampler = MultiLayerNeighborSampler([4, 4])
    train_loader = DataLoader(
        g,
        target_idx[train_idx],
        sampler,
        device=device,
        batch_size=100,
        shuffle=True,
    )
    # no separate validation subset, use train index instead for validation
    val_loader = DataLoader(
        g,
        target_idx[train_idx],
        sampler,
        device=device,
        batch_size=100,
        shuffle=False,
    )
    for epoch in range(epochs):
        model.train()
        total_loss = 0
        for it, (input_nodes, output_nodes, blocks) in enumerate(train_loader):
            output_nodes = inv_target[output_nodes]
            for block in blocks:
                block.edata["norm"] = dgl.norm_by_dst(block).unsqueeze(1)
            logits = model(blocks)
            loss = loss_fcn(logits, labels[output_nodes])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        acc = evaluate(model, labels, num_classes, val_loader, inv_target)
        print(
            "Epoch {:05d} | Loss {:.4f} | Val. Accuracy {:.4f} ".format(
                epoch, total_loss / (it + 1), acc
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="RGCN for entity classification with sampling"
    )
    parser.add_argument(
        "--dataset",
        type=str,
        default="aifb",
        help="Dataset name ('aifb', 'mutag', 'bgs', 'am').",
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)  # DGL's DataLoader shuffles with numpy's generator
    dgl.seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"Training with DGL built-in RGCN module with sampling.")

    # load and preprocess dataset
    if args.dataset in ("aifb", "mutag", "bgs", "am"):
        data = SyntheticRDFDataset(args.dataset, scale=args.scale)
    else:
        raise ValueError("Unknown dataset: {}".format(args.dataset))
    g = data[0]
    num_rels = len(g.canonical_etypes)
    category = data.predict_category
    labels = g.nodes[category].data.pop("labels").to(device)
    train_mask = g.nodes[category].data.pop("train_mask")
    test_mask = g.nodes[category].data.pop("test_mask")
    # find target category and node id
    category_id = g.ntypes.index(category)
    g = dgl.to_homogeneous(g)
    node_ids = torch.arange(g.num_nodes())
    target_idx = node_ids[g.ndata[dgl.NTYPE] == category_id]
    # rename the fields as they can be changed by DataLoader
    g.ndata["ntype"] = g.ndata.pop(dgl.NTYPE)
    g.ndata["type_id"] = g.ndata.pop(dgl.NID)
    # find the mapping (inv_target) from global node IDs to type-specific node IDs
    inv_target = torch.empty((g.num_nodes(),), dtype=torch.int64).to(device)
    inv_target[target_idx] = torch.arange(
        0, target_idx.shape[0], dtype=inv_target.dtype
    ).to(device)

    # create RGCN model
    in_size = g.num_nodes()  # featureless with one-hot encoding
    num_classes = data.num_classes
    model = RGCN(in_size, 16, num_classes, num_rels).to(device)

    train(device, g, target_idx, labels, train_mask, num_classes, model, args.epochs)
    test_idx = torch.nonzero(test_mask, as_tuple=False).squeeze()
    test_sampler = MultiLayerNeighborSampler(
        [-1, -1]
    )  # -1 for sampling all neighbors
    test_loader = DataLoader(
        g,
        target_idx[test_idx],
        test_sampler,
        device=device,
        batch_size=32,
        shuffle=False,
    )
    acc = evaluate(model, labels, num_classes, test_loader, inv_target)
    print("Test accuracy {:.4f}".format(acc))
