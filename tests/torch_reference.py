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
        self.register_buffer(
            "offsets",
            torch.as_tensor(np.concatenate(([0], np.cumsum(field_dims)[:-1])), dtype=torch.long),
            persistent=False,
        )

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
    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ):
        super().__init__()
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        in_dim = (len(field_dims) + 1) * embed_dim
        self.bottom = MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False)
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat, x_num):
        fea = self.bottom(_front(self.embedding, self.numerical_layer, x_cat, x_num))
        return torch.stack([torch.sigmoid(t(fea).squeeze(1)) for t in self.tower], 1)


class ESMM(torch.nn.Module):
    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ):
        super().__init__()
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        in_dim = (len(field_dims) + 1) * embed_dim
        self.bottom = torch.nn.ModuleList(
            [
                MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False)
                for _ in range(num_tasks)
            ]
        )
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat, x_num):
        emb = _front(self.embedding, self.numerical_layer, x_cat, x_num)
        out = []
        for i in range(len(self.tower)):
            p = torch.sigmoid(self.tower[i](self.bottom[i](emb)).squeeze(1))
            out.append(p * out[0] if i == 1 else p)
        return torch.stack(out, 1)


class SingleTask(torch.nn.Module):
    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ):
        super().__init__()
        in_dim = (len(field_dims) + 1) * embed_dim
        self.embedding = torch.nn.ModuleList(
            [EmbeddingLayer(field_dims, embed_dim) for _ in range(num_tasks)]
        )
        self.numerical_layer = torch.nn.ModuleList(
            [torch.nn.Linear(num_dense, embed_dim) for _ in range(num_tasks)]
        )
        self.bottom = torch.nn.ModuleList(
            [
                MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False)
                for _ in range(num_tasks)
            ]
        )
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat, x_num):
        out = []
        for i in range(len(self.tower)):
            emb = _front(self.embedding[i], self.numerical_layer[i], x_cat, x_num)
            out.append(torch.sigmoid(self.tower[i](self.bottom[i](emb)).squeeze(1)))
        return torch.stack(out, 1)


def _gate(in_dim, n):
    return torch.nn.Sequential(torch.nn.Linear(in_dim, n), torch.nn.Softmax(dim=1))


class _Front(torch.nn.Module):
    """Shared embedding and numerical layer of the expert backbones."""

    def __init__(self, field_dims, num_dense, embed_dim):
        super().__init__()
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        self.in_dim = (len(field_dims) + 1) * embed_dim

    def front(self, x_cat, x_num):
        return _front(self.embedding, self.numerical_layer, x_cat, x_num)

    def heads(self, features):
        return torch.stack(
            [torch.sigmoid(t(f).squeeze(1)) for t, f in zip(self.tower, features)], 1
        )


class OMoE(_Front):
    """One Linear per expert and one shared gate, as the authors' OMoEModel."""

    per_task_gates = False

    def __init__(
        self,
        field_dims,
        num_dense,
        num_tasks,
        embed_dim,
        bottom_dims,
        tower_dims,
        dropout,
        num_experts=8,
    ):
        super().__init__(field_dims, num_dense, embed_dim)
        self.expert = torch.nn.ModuleList(
            [
                MultiLayerPerceptron(self.in_dim, bottom_dims, dropout, output_layer=False)
                for _ in range(num_experts)
            ]
        )
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )
        if self.per_task_gates:
            self.gate = torch.nn.ModuleList(
                [_gate(self.in_dim, num_experts) for _ in range(num_tasks)]
            )
        else:
            self.gate = _gate(self.in_dim, num_experts)

    def forward(self, x_cat, x_num):
        emb = self.front(x_cat, x_num)
        fea = torch.stack([e(emb) for e in self.expert], 1)
        gates = self.gate if self.per_task_gates else [self.gate]
        mixed = [torch.bmm(g(emb).unsqueeze(1), fea).squeeze(1) for g in gates]
        return self.heads(
            mixed if self.per_task_gates else mixed * len(self.tower)
        )  # OMoE: one mixture


class MMoE(OMoE):
    """As OMoE with one gate per task (the authors' MMoEModel)."""

    per_task_gates = True


class PLE(_Front):
    """The authors' PLEModel as their module builds it: per level one list of experts (task 0's
    E/2, task 1's, ..., then the E/2 shared) and T + 1 gates; stream j applies its expert set
    (own and shared; every expert for the shared stream j = T) to its own input."""

    def __init__(
        self,
        field_dims,
        num_dense,
        num_tasks,
        embed_dim,
        bottom_dims,
        tower_dims,
        dropout,
        num_experts=8,
    ):
        super().__init__(field_dims, num_dense, embed_dim)
        h = s = num_experts // 2
        dims = [self.in_dim] + list(bottom_dims)
        self.expert = torch.nn.ModuleList(
            [
                torch.nn.ModuleList(
                    [
                        MultiLayerPerceptron(dims[i], [dims[i + 1]], dropout, output_layer=False)
                        for _ in range(num_tasks * h + s)
                    ]
                )
                for i in range(len(bottom_dims))
            ]
        )
        self.gate = torch.nn.ModuleList(
            [
                torch.nn.ModuleList(
                    [_gate(dims[i], h + s) for _ in range(num_tasks)]
                    + [_gate(dims[i], num_tasks * h + s)]
                )
                for i in range(len(bottom_dims))
            ]
        )
        shared = list(range(num_tasks * h, num_tasks * h + s))
        self.index = [list(range(j * h, (j + 1) * h)) + shared for j in range(num_tasks)]
        self.index.append(list(range(num_tasks * h + s)))
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat, x_num):
        fea = [self.front(x_cat, x_num)] * len(self.index)
        for experts, gates in zip(self.expert, self.gate):
            for j, index in enumerate(self.index):
                x = torch.stack([experts[e](fea[j]) for e in index], 1)
                fea[j] = torch.bmm(gates[j](fea[j]).unsqueeze(1), x).squeeze(1)
        return self.heads(fea[: len(self.tower)])


class PLEPaper(_Front):
    """The PLE paper's version: per level, specific experts per task on the task stream, shared
    experts on the shared stream; a shared gate per level (the last one unused)."""

    def __init__(
        self,
        field_dims,
        num_dense,
        num_tasks,
        embed_dim,
        bottom_dims,
        tower_dims,
        dropout,
        num_experts=8,
    ):
        super().__init__(field_dims, num_dense, embed_dim)
        h = s = num_experts // 2
        dims = [self.in_dim] + list(bottom_dims)

        def experts(i, n):
            return torch.nn.ModuleList(
                [
                    MultiLayerPerceptron(dims[i], [dims[i + 1]], dropout, output_layer=False)
                    for _ in range(n)
                ]
            )

        levels = range(len(bottom_dims))
        self.task_experts = torch.nn.ModuleList(
            [torch.nn.ModuleList([experts(i, h) for _ in range(num_tasks)]) for i in levels]
        )
        self.task_gates = torch.nn.ModuleList(
            [torch.nn.ModuleList([_gate(dims[i], h + s) for _ in range(num_tasks)]) for i in levels]
        )
        self.share_experts = torch.nn.ModuleList([experts(i, s) for i in levels])
        self.share_gates = torch.nn.ModuleList([_gate(dims[i], num_tasks * h + s) for i in levels])
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat, x_num):
        emb = self.front(x_cat, x_num)
        T = len(self.tower)
        fea = [emb] * (T + 1)
        for i in range(len(self.task_experts)):
            shared = [e(fea[T]) for e in self.share_experts[i]]
            every = []
            for j in range(T):
                own = [e(fea[j]) for e in self.task_experts[i][j]]
                every += own
                fea[j] = torch.bmm(
                    self.task_gates[i][j](fea[j]).unsqueeze(1), torch.stack(own + shared, 1)
                ).squeeze(1)
            if i < len(self.task_experts) - 1:
                fea[T] = torch.bmm(
                    self.share_gates[i](fea[T]).unsqueeze(1), torch.stack(every + shared, 1)
                ).squeeze(1)
        return self.heads(fea[:T])


class AITM(_Front):
    """The authors' AITMModel: per-task bottoms, information transfer g, attention h1..h3."""

    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ):
        super().__init__(field_dims, num_dense, embed_dim)
        d = bottom_dims[-1]
        self.g = torch.nn.ModuleList([torch.nn.Linear(d, d) for _ in range(num_tasks - 1)])
        self.h1 = torch.nn.Linear(d, d)
        self.h2 = torch.nn.Linear(d, d)
        self.h3 = torch.nn.Linear(d, d)
        self.bottom = torch.nn.ModuleList(
            [
                MultiLayerPerceptron(self.in_dim, bottom_dims, dropout, output_layer=False)
                for _ in range(num_tasks)
            ]
        )
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat, x_num):
        emb = self.front(x_cat, x_num)
        fea = [b(emb) for b in self.bottom]
        for i in range(1, len(fea)):
            x = torch.stack([self.g[i - 1](fea[i - 1]), fea[i]], 1)
            v, k, q = self.h1(x), self.h2(x), self.h3(x)
            a = torch.softmax(torch.sum(k * q, 2, keepdim=True) / np.sqrt(v.shape[2]), dim=1)
            fea[i] = torch.sum(a * v, 1)
        return self.heads(fea)


TWINS = {
    "singletask": SingleTask,
    "sharedbottom": SharedBottom,
    "esmm": ESMM,
    "omoe": OMoE,
    "mmoe": MMoE,
    "ple": PLE,
    "ple_paper": PLEPaper,
    "aitm": AITM,
}


def twin_of(model):
    """The PyTorch twin of an rmtl backbone, holding a copy of its weights."""
    c = model.config
    extra = {} if c.num_experts is None else {"num_experts": c.num_experts}
    net = TWINS[c.name](
        list(c.field_dims),
        c.num_dense,
        c.num_tasks,
        c.embed_dim,
        list(c.bottom_dims),
        list(c.tower_dims),
        c.dropout,
        **extra,
    )
    net.load_state_dict(
        {k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True
    )
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


class CriticNeg(torch.nn.Module):
    """The reference critic: front end + action field, bottom, tower, Q = -ReLU(out)."""

    def __init__(self, field_dims, num_dense, embed_dim, bottom_dims, tower_dims, dropout):
        super().__init__()
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        self.action_layer = torch.nn.Linear(1, embed_dim)
        in_dim = (len(field_dims) + 2) * embed_dim
        self.bottom = MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False)
        self.tower = MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout)

    def forward(self, x_cat, x_num, action):
        act = self.action_layer(action.unsqueeze(1))
        x = torch.cat([_front(self.embedding, self.numerical_layer, x_cat, x_num), act], 1)
        return -torch.relu(self.tower(self.bottom(x))).squeeze(1)


def critic_twin_of(critic):
    """The PyTorch twin of an rmtl critic, holding a copy of its weights."""
    c = critic.config
    net = CriticNeg(
        list(c.field_dims),
        c.num_dense,
        c.embed_dim,
        list(c.bottom_dims),
        list(c.tower_dims),
        c.dropout,
    )
    net.load_state_dict(
        {k: torch.from_numpy(v) for k, v in critic.state_dict().items()}, strict=True
    )
    return net


def td_loss(q, q_target, s, a, s_next, a_next, reward, done, weight, gamma, td3):
    """mean_i w_i (Q(s_i, a_i) - y_i)^2 with y = r + gamma (1 - done) Qn not differentiated;
    Qn = min(Q'(s', a'), Q(s', a')) (td3) or Q'(s', a'), both in eval mode."""
    with torch.no_grad():
        mode = q.training
        q.eval()
        q_next = q_target.eval()(*s_next, a_next)
        if td3:
            q_next = torch.minimum(q_next, q(*s_next, a_next))
        q.train(mode)
        y = reward + gamma * (1 - done) * q_next
    err = (q(*s, a) - y) ** 2
    return (err * weight).mean() if weight is not None else err.mean()


def actor_loss(actor, critics, x_cat, x_num, weight=None):
    """-(1/B) sum_i sum_k w_ik Q_k(s_i, mu_k(s_i)), differentiated through the critics into the
    actor."""
    prob = actor(x_cat, x_num)
    q = torch.stack([c(x_cat, x_num, prob[:, k]) for k, c in enumerate(critics)], 1)
    if weight is not None:
        q = q * weight
    return -q.sum(1).mean()


def soft_update(target, source, tau):
    """theta' = tau theta + (1 - tau) theta', as the authors' agents do it."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.copy_(tau * s + (1.0 - tau) * t)
