"""PyTorch twins of rmtl's modules, written from SPEC section 4, used by the parity tests.

Module and parameter names follow the reference RMTL code so that state_dict keys match.
"""
from __future__ import annotations

import numpy as np
import torch


class EmbeddingLayer(torch.nn.Module):
    def __init__(self, field_dims, embed_dim):
        super().__init__()
        self.embedding = torch.nn.Embedding(int(sum(field_dims)), embed_dim, padding_idx=0)
        self.register_buffer("offsets", torch.as_tensor(np.concatenate(([0], np.cumsum(field_dims)[:-1])),
                                                        dtype=torch.long), persistent=False)

    def forward(self, x):
        return self.embedding(x + self.offsets.unsqueeze(0))


class MultiLayerPerceptron(torch.nn.Module):
    def __init__(self, input_dim, dims, dropout, output_layer=True):
        super().__init__()
        layers = []
        for d in dims:
            layers += [torch.nn.Linear(input_dim, d), torch.nn.ReLU(), torch.nn.Dropout(p=dropout)]
            input_dim = d
        if output_layer:
            layers.append(torch.nn.Linear(input_dim, 1))
        self.mlp = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


def _front(embedding, numerical_layer, x_cat, x_num):
    e = embedding(x_cat)
    n = numerical_layer(x_num).unsqueeze(1)
    return torch.cat([e, n], 1).flatten(1)


class SharedBottom(torch.nn.Module):
    def __init__(self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout):
        super().__init__()
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        in_dim = (len(field_dims) + 1) * embed_dim
        self.bottom = MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False)
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)])

    def forward(self, x_cat, x_num):
        fea = self.bottom(_front(self.embedding, self.numerical_layer, x_cat, x_num))
        return torch.stack([torch.sigmoid(t(fea).squeeze(1)) for t in self.tower], 1)


class ESMM(torch.nn.Module):
    def __init__(self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout):
        super().__init__()
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        in_dim = (len(field_dims) + 1) * embed_dim
        self.bottom = torch.nn.ModuleList(
            [MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False) for _ in range(num_tasks)])
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)])

    def forward(self, x_cat, x_num):
        emb = _front(self.embedding, self.numerical_layer, x_cat, x_num)
        out = []
        for i in range(len(self.tower)):
            p = torch.sigmoid(self.tower[i](self.bottom[i](emb)).squeeze(1))
            out.append(p * out[0] if i == 1 else p)
        return torch.stack(out, 1)


class SingleTask(torch.nn.Module):
    def __init__(self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout):
        super().__init__()
        in_dim = (len(field_dims) + 1) * embed_dim
        self.embedding = torch.nn.ModuleList([EmbeddingLayer(field_dims, embed_dim) for _ in range(num_tasks)])
        self.numerical_layer = torch.nn.ModuleList(
            [torch.nn.Linear(num_dense, embed_dim) for _ in range(num_tasks)])
        self.bottom = torch.nn.ModuleList(
            [MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False) for _ in range(num_tasks)])
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)])

    def forward(self, x_cat, x_num):
        out = []
        for i in range(len(self.tower)):
            emb = _front(self.embedding[i], self.numerical_layer[i], x_cat, x_num)
            out.append(torch.sigmoid(self.tower[i](self.bottom[i](emb)).squeeze(1)))
        return torch.stack(out, 1)


TWINS = {"singletask": SingleTask, "sharedbottom": SharedBottom, "esmm": ESMM}


def twin_of(model):
    """The PyTorch twin of an rmtl backbone, holding a copy of its weights."""
    c = model.config
    net = TWINS[c.name](list(c.field_dims), c.num_dense, c.num_tasks, c.embed_dim, list(c.bottom_dims),
                        list(c.tower_dims), c.dropout)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    return net


def weighted_bce(prob, labels, weights=None):
    """(1/T) sum_k mean_i w_ik BCE(y_ik, p_ik), as the rmtl core computes it."""
    loss = torch.nn.functional.binary_cross_entropy(prob, labels, reduction="none")
    if weights is not None:
        loss = loss * weights
    return loss.mean()


def adam_steps(net, batches, steps, lr, weight_decay):
    """Reference Adam loop; the padding row of every embedding is kept fixed, as in rmtl
    (torch's weight decay would otherwise move it although it never gets a gradient)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    tables = [m.weight for m in net.modules() if isinstance(m, torch.nn.Embedding)]
    for s in range(steps):
        x_cat, x_num, y = batches[s % len(batches)]
        opt.zero_grad()
        weighted_bce(net(x_cat, x_num), y).backward()
        kept = [t.data[0].clone() for t in tables]
        opt.step()
        for t, row in zip(tables, kept):
            t.data[0] = row
