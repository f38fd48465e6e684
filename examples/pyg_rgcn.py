"""PyG's own RGCN entity-classification example (``examples/rgcn.py`` of PyTorch Geometric) with
the layer import changed to ``pigeon.nn.pyg``; the model, the featureless first layer
(``conv1(None, ...)``), the 2-hop filtering, the training and the test loop are PyG's.

    python examples/pyg_rgcn.py [--dataset AIFB] [--scale 1.0] [--epochs 50]

Three other changes, because nothing can be downloaded here: ``Entities`` (which downloads the
RDF graphs) is replaced by ``SyntheticEntities``, a seeded graph with the shape of the named data
set from ``pigeon.datasets.synthetic`` (its entities: the nodes of one node type, split and
labelled by the generator); ``--scale`` shrinks that graph and ``--epochs`` the run (PyG: 50);
and the script seeds torch, so that the same script with PyG's import starts from the same
weights. Needs PyG (for ``k_hop_subgraph`` and ``Data``).
"""
import argparse
import time

import torch
import torch.nn.functional as F

from torch_geometric.data import Data
from torch_geometric.utils import k_hop_subgraph

import pigeon.datasets
from pigeon.nn.pyg import FastRGCNConv, RGCNConv  # was: from torch_geometric.nn import FastRGCNConv, RGCNConv


class SyntheticEntities:
    """Stands in for ``torch_geometric.datasets.Entities``: ``num_relations``, ``num_classes`` and
    ``[0]``, a ``Data`` with ``edge_index``, ``edge_type``, ``train_idx``, ``train_y``, ``test_idx``
    and ``test_y``, on the synthetic graph of that name (entities: the nodes of node type 1)."""

    def __init__(self, name, scale=1.0):
        ds = pigeon.datasets.synthetic(name.lower(), scale=scale, feat_dim=1, num_classes=4)
        g = ds.graph
        entities = g.ntype == min(1, g.num_ntypes - 1)
        train_idx = torch.nonzero(entities & ds.train_mask).flatten()
        test_idx = torch.nonzero(entities & ds.test_mask).flatten()
        self.num_relations, self.num_classes = g.num_etypes, ds.num_classes
        self.data = Data(edge_index=torch.stack([g.src, g.dst]), edge_type=g.etype, num_nodes=g.num_nodes,
                         train_idx=train_idx, train_y=ds.labels[train_idx], test_idx=test_idx,
                         test_y=ds.labels[test_idx])

    def __getitem__(self, i):
        return self.data


parser = argparse.ArgumentParser()
parser.add_argument('--dataset', type=str, default='AIFB',
                    choices=['AIFB', 'MUTAG', 'BGS', 'AM'])
parser.add_argument('--scale', type=float, default=1.0)
parser.add_argument('--epochs', type=int, default=50)
args = parser.parse_args()
torch.manual_seed(0)

# Trade memory consumption for faster computation.
if args.dataset in ['AIFB', 'MUTAG']:
    RGCNConv = FastRGCNConv

dataset = SyntheticEntities(args.dataset, args.scale)
data = dataset[0]

# BGS and AM graphs are too big to process them in a full-batch fashion.
# Since our model does only make use of a rather small receptive field, we
# filter the graph to only contain the nodes that are at most 2-hop neighbors
# away from any training/test node.
node_idx = torch.cat([data.train_idx, data.test_idx], dim=0)
node_idx, edge_index, mapping, edge_mask = k_hop_subgraph(
    node_idx, 2, data.edge_index, relabel_nodes=True)

data.num_nodes = node_idx.size(0)
data.edge_index = edge_index
data.edge_type = data.edge_type[edge_mask]
data.train_idx = mapping[:data.train_idx.size(0)]
data.test_idx = mapping[data.train_idx.size(0):]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = RGCNConv(data.num_nodes, 16, dataset.num_relations,
                              num_bases=30)
        self.conv2 = RGCNConv(16, dataset.num_classes, dataset.num_relations,
                              num_bases=30)

    def forward(self, edge_index, edge_type):
        x = F.relu(self.conv1(None, edge_index, edge_type))
        x = self.conv2(x, edge_index, edge_type)
        return F.log_softmax(x, dim=1)


if torch.cuda.is_available():
    device = torch.device('cuda')
elif hasattr(torch.backends, 'mps') and torch.backends.mps.is_available():
    device = torch.device('mps')
else:
    device = torch.device('cpu')

device = torch.device('cpu') if args.dataset == 'AM' else device
model, data = Net().to(device), data.to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.0005)


def train():
    model.train()
    optimizer.zero_grad()
    out = model(data.edge_index, data.edge_type)
    loss = F.nll_loss(out[data.train_idx], data.train_y)
    loss.backward()
    optimizer.step()
    return float(loss)


@torch.no_grad()
def test():
    model.eval()
    pred = model(data.edge_index, data.edge_type).argmax(dim=-1)
    train_acc = float((pred[data.train_idx] == data.train_y).float().mean())
    test_acc = float((pred[data.test_idx] == data.test_y).float().mean())
    return train_acc, test_acc


times = []
for epoch in range(1, args.epochs + 1):
    start = time.time()
    loss = train()
    train_acc, test_acc = test()
    print(f'Epoch: {epoch:02d}, Loss: {loss:.4f}, Train: {train_acc:.4f} '
          f'Test: {test_acc:.4f}')
    times.append(time.time() - start)
print(f"Median time per epoch: {torch.tensor(times).median():.4f}s")
