"""PyTorch at the edge: rmtl's networks as PyTorch modules and back (needs torch).

Every rmtl network has a PyTorch twin here: the reference module of its backbone (the
authors' ``SharedBottomModel``, ``ESMMModel``, ``OMoEModel``, ``MMoEModel``, ``PLEModel``,
``AITMModel``, single-task models; the PLE paper's version) or critic (``CriticNeg``), with
the same parameter names and shapes, so ``state_dict()`` keys match exactly and the twin
computes the same function (the test suite checks forward, gradients and Adam steps on both).

- :func:`to_torch` ``(net)``: the twin holding a copy of the network's weights;
- :func:`from_torch` ``(module)``: the rmtl network holding a copy of a module's weights;
- :func:`state_dict` ``(net)``: the weights as torch tensors, for
  ``torch_module.load_state_dict(rmtl.torch.state_dict(model))``;
  :func:`state_dict_to_torch` converts any mapping of arrays;
- :func:`export_onnx` ``(net, path)``: an ONNX file of the network (needs ``onnx``).

The other way needs nothing: ``model.load_state_dict(torch_module.state_dict())`` takes
tensors as they are. ``import rmtl`` does not import torch; ``import rmtl.torch`` (or the
first use of ``rmtl.torch``) does (``pip install 'rmtl[torch]'``).
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch  # the PyTorch package: absolute imports never name this module

from ._arrays import _detach
from .critic import Critic, CriticConfig
from .models import BackboneConfig, Net, create

__all__ = [
    "to_torch",
    "from_torch",
    "state_dict",
    "state_dict_to_torch",
    "module_for",
    "export_onnx",
    "SingleTask",
    "SharedBottom",
    "ESMM",
    "OMoE",
    "MMoE",
    "PLE",
    "PLEPaper",
    "AITM",
    "CriticNeg",
]


# ---------------------------------------------------------------------- building blocks
class EmbeddingLayer(torch.nn.Module):
    """One table for every field, each field's codes offset by the sizes of those before."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(int(sum(field_dims)), embed_dim, padding_idx=0)
        self.register_buffer(
            "offsets",
            torch.as_tensor(np.concatenate(([0], np.cumsum(field_dims)[:-1])), dtype=torch.long),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) -> embeddings (n, F, embed_dim)."""
        return self.embedding(x + self.offsets.unsqueeze(0))


class MultiLayerPerceptron(torch.nn.Module):
    """``Linear`` + ReLU + dropout per width of ``dims``, then ``Linear(.., 1)`` if
    ``output_layer``."""

    def __init__(
        self, input_dim: int, dims: Sequence[int], dropout: float, output_layer: bool = True
    ) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for d in dims:
            layers += [torch.nn.Linear(input_dim, d), torch.nn.ReLU(), torch.nn.Dropout(p=dropout)]
            input_dim = d
        if output_layer:
            layers.append(torch.nn.Linear(input_dim, 1))
        self.mlp = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layers applied in order."""
        return self.mlp(x)


def _front(embedding, numerical_layer, x_cat, x_num):
    e = embedding(x_cat)
    n = numerical_layer(x_num).unsqueeze(1)
    return torch.cat([e, n], 1).flatten(1)


def _gate(in_dim, n):
    return torch.nn.Sequential(torch.nn.Linear(in_dim, n), torch.nn.Softmax(dim=1))


# The twins' constructor and forward parameters, appended to every twin's docstrings by
# _Twin.__init_subclass__ (num_experts only where the constructor takes it).
_TWIN_PARAMETERS = """Parameters
----------
field_dims : sequence of int
    Cardinality of every categorical field.
num_dense : int
    Number of numerical features.
num_tasks : int
    Number of tasks.
embed_dim : int
    Embedding width.
bottom_dims : sequence of int
    MLP widths of the bottom (or of every expert; the PLEs: one level per width).
tower_dims : sequence of int
    Hidden widths of each task's tower.
dropout : float
    Dropout rate."""

_TWIN_EXPERTS = """
num_experts : int, default 8
    Number of experts (the PLEs: half per task, half shared; an even count)."""

_TWIN_FORWARD = """Parameters
----------
x_cat : torch.Tensor (n, F) int64
    Categorical codes.
x_num : torch.Tensor (n, D) float32
    Numerical features.

Returns
-------
torch.Tensor (n, T) float32
    One probability per row and task."""


class _Twin(torch.nn.Module):
    """A backbone twin: records the rmtl configuration it was built with (``rmtl_config``,
    which :func:`from_torch` reads) and turns tower outputs into probabilities."""

    name = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        doc = cls.__dict__.get("__doc__")
        if doc:
            experts = "num_experts" in inspect.signature(cls.__init__).parameters
            section = _TWIN_PARAMETERS + (_TWIN_EXPERTS if experts else "")
            cls.__doc__ = f"{inspect.cleandoc(doc)}\n\n{section}\n"
        forward = cls.__dict__.get("forward")
        if forward is not None and forward.__doc__:
            forward.__doc__ = f"{inspect.cleandoc(forward.__doc__)}\n\n{_TWIN_FORWARD}\n"

    def _record(
        self,
        field_dims,
        num_dense,
        num_tasks,
        embed_dim,
        bottom_dims,
        tower_dims,
        dropout,
        num_experts=None,
    ):
        self.rmtl_config = BackboneConfig(
            self.name,
            tuple(int(d) for d in field_dims),
            int(num_dense),
            int(num_tasks),
            int(embed_dim),
            tuple(int(d) for d in bottom_dims),
            tuple(int(d) for d in tower_dims),
            float(dropout),
            0,
            None if num_experts is None else int(num_experts),
        ).to_dict()

    def _front_init(self, field_dims, num_dense, embed_dim):
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        self.in_dim = (len(field_dims) + 1) * embed_dim

    def front(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """The shared embedding and numerical layer, concatenated: (n, (F + 1) embed_dim)."""
        return _front(self.embedding, self.numerical_layer, x_cat, x_num)

    def heads(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Tower k on ``features[k]``, through a sigmoid: (n, T) probabilities."""
        return torch.stack(
            [torch.sigmoid(t(f).squeeze(1)) for t, f in zip(self.tower, features)], 1
        )


# ---------------------------------------------------------------------- backbones
class SharedBottom(_Twin):
    """One bottom MLP over the shared embedding, one tower per task."""

    name = "sharedbottom"

    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ) -> None:
        super().__init__()
        self._record(field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout)
        self._front_init(field_dims, num_dense, embed_dim)
        self.bottom = MultiLayerPerceptron(self.in_dim, bottom_dims, dropout, output_layer=False)
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) int64 and dense features (n, D) float32 -> (n, T) probabilities."""
        fea = self.bottom(self.front(x_cat, x_num))
        return self.heads([fea] * len(self.tower))


class ESMM(_Twin):
    """One bottom MLP and tower per task over the shared embedding; output 2 is
    ``sigmoid(tower 2) * output 1``."""

    name = "esmm"

    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ) -> None:
        super().__init__()
        self._record(field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout)
        self._front_init(field_dims, num_dense, embed_dim)
        self.bottom = torch.nn.ModuleList(
            [
                MultiLayerPerceptron(self.in_dim, bottom_dims, dropout, output_layer=False)
                for _ in range(num_tasks)
            ]
        )
        self.tower = torch.nn.ModuleList(
            [MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout) for _ in range(num_tasks)]
        )

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) int64 and dense features (n, D) float32 -> (n, T) probabilities."""
        emb = self.front(x_cat, x_num)
        out: list[torch.Tensor] = []
        for i in range(len(self.tower)):
            p = torch.sigmoid(self.tower[i](self.bottom[i](emb)).squeeze(1))
            out.append(p * out[0] if i == 1 else p)
        return torch.stack(out, 1)


class SingleTask(_Twin):
    """One independent model per task: its own embedding, numerical layer, bottom and tower."""

    name = "singletask"

    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ) -> None:
        super().__init__()
        self._record(field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout)
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

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) int64 and dense features (n, D) float32 -> (n, T) probabilities."""
        out = []
        for i in range(len(self.tower)):
            emb = _front(self.embedding[i], self.numerical_layer[i], x_cat, x_num)
            out.append(torch.sigmoid(self.tower[i](self.bottom[i](emb)).squeeze(1)))
        return torch.stack(out, 1)


class OMoE(_Twin):
    """One-gate mixture of experts: one MLP per expert, one softmax gate for every task."""

    name = "omoe"
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
    ) -> None:
        super().__init__()
        self._record(
            field_dims,
            num_dense,
            num_tasks,
            embed_dim,
            bottom_dims,
            tower_dims,
            dropout,
            num_experts,
        )
        self._front_init(field_dims, num_dense, embed_dim)
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

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) int64 and dense features (n, D) float32 -> (n, T) probabilities."""
        emb = self.front(x_cat, x_num)
        fea = torch.stack([e(emb) for e in self.expert], 1)
        gates = self.gate if self.per_task_gates else [self.gate]
        mixed = [torch.bmm(g(emb).unsqueeze(1), fea).squeeze(1) for g in gates]
        return self.heads(mixed if self.per_task_gates else mixed * len(self.tower))


class MMoE(OMoE):
    """Multi-gate mixture of experts: as :class:`OMoE` with one gate per task."""

    name = "mmoe"
    per_task_gates = True


class PLE(_Twin):
    """The authors' PLE: per level one list of experts (task 0's ``E/2``, task 1's, ..., then
    the ``E/2`` shared) and T + 1 gates; stream j applies its experts (its own and the shared
    ones; every expert for the shared stream j = T) to its own input."""

    name = "ple"

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
    ) -> None:
        super().__init__()
        self._record(
            field_dims,
            num_dense,
            num_tasks,
            embed_dim,
            bottom_dims,
            tower_dims,
            dropout,
            num_experts,
        )
        self._front_init(field_dims, num_dense, embed_dim)
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

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) int64 and dense features (n, D) float32 -> (n, T) probabilities."""
        fea = [self.front(x_cat, x_num)] * len(self.index)
        for experts, gates in zip(self.expert, self.gate):
            for j, index in enumerate(self.index):
                x = torch.stack([experts[e](fea[j]) for e in index], 1)
                fea[j] = torch.bmm(gates[j](fea[j]).unsqueeze(1), x).squeeze(1)
        return self.heads(fea[: len(self.tower)])


class PLEPaper(_Twin):
    """The PLE paper's version: per level, specific experts per task on the task streams,
    shared experts on the shared stream; a shared gate per level (the last one unused)."""

    name = "ple_paper"

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
    ) -> None:
        super().__init__()
        self._record(
            field_dims,
            num_dense,
            num_tasks,
            embed_dim,
            bottom_dims,
            tower_dims,
            dropout,
            num_experts,
        )
        self._front_init(field_dims, num_dense, embed_dim)
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

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) int64 and dense features (n, D) float32 -> (n, T) probabilities."""
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


class AITM(_Twin):
    """The authors' AITM: per-task bottoms, information transfer ``g``, attention
    ``h1``..``h3``."""

    name = "aitm"

    def __init__(
        self, field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout
    ) -> None:
        super().__init__()
        self._record(field_dims, num_dense, num_tasks, embed_dim, bottom_dims, tower_dims, dropout)
        self._front_init(field_dims, num_dense, embed_dim)
        d = bottom_dims[-1]
        self.sqrt_d = math.sqrt(d)  # a constant, so that tracing (ONNX) sees no shape arithmetic
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

    def forward(self, x_cat: torch.Tensor, x_num: torch.Tensor) -> torch.Tensor:
        """Codes (n, F) int64 and dense features (n, D) float32 -> (n, T) probabilities."""
        emb = self.front(x_cat, x_num)
        fea = [b(emb) for b in self.bottom]
        for i in range(1, len(fea)):
            x = torch.stack([self.g[i - 1](fea[i - 1]), fea[i]], 1)
            v, k, q = self.h1(x), self.h2(x), self.h3(x)
            a = torch.softmax(torch.sum(k * q, 2, keepdim=True) / self.sqrt_d, dim=1)
            fea[i] = torch.sum(a * v, 1)
        return self.heads(fea)


TWINS: dict[str, type[_Twin]] = {
    c.name: c for c in (SingleTask, SharedBottom, ESMM, OMoE, MMoE, PLE, PLEPaper, AITM)
}


# ---------------------------------------------------------------------- critic
class CriticNeg(torch.nn.Module):
    """The reference critic: embedding and numerical layer, the action as one more field
    (``action_layer = Linear(1, embed_dim)``), bottom and tower MLPs, ``Q = -ReLU(out)``.

    Parameters
    ----------
    field_dims : sequence of int
        Cardinality of every categorical field.
    num_dense : int
        Number of numerical features.
    embed_dim : int
        Embedding width (of the fields, the numerical layer and the action layer).
    bottom_dims : sequence of int
        Widths of the bottom MLP.
    tower_dims : sequence of int
        Hidden widths of the tower MLP (its output layer has width 1).
    dropout : float
        Dropout rate.
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        num_dense: int,
        embed_dim: int,
        bottom_dims: Sequence[int],
        tower_dims: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.rmtl_config = CriticConfig(
            tuple(int(d) for d in field_dims),
            int(num_dense),
            int(embed_dim),
            tuple(int(d) for d in bottom_dims),
            tuple(int(d) for d in tower_dims),
            float(dropout),
        ).to_dict()
        self.embedding = EmbeddingLayer(field_dims, embed_dim)
        self.numerical_layer = torch.nn.Linear(num_dense, embed_dim)
        self.action_layer = torch.nn.Linear(1, embed_dim)
        in_dim = (len(field_dims) + 2) * embed_dim
        self.bottom = MultiLayerPerceptron(in_dim, bottom_dims, dropout, output_layer=False)
        self.tower = MultiLayerPerceptron(bottom_dims[-1], tower_dims, dropout)

    def forward(
        self, x_cat: torch.Tensor, x_num: torch.Tensor, action: torch.Tensor
    ) -> torch.Tensor:
        """Codes (n, F) int64, dense features (n, D) and actions (n,) float32 -> Q (n,).

        Parameters
        ----------
        x_cat : torch.Tensor (n, F) int64
            Categorical codes.
        x_num : torch.Tensor (n, D) float32
            Numerical features.
        action : torch.Tensor (n,) float32
            One action per row.

        Returns
        -------
        torch.Tensor (n,) float32
            Q values, <= 0.
        """
        act = self.action_layer(action.unsqueeze(1))
        x = torch.cat([_front(self.embedding, self.numerical_layer, x_cat, x_num), act], 1)
        return -torch.relu(self.tower(self.bottom(x))).squeeze(1)


# ---------------------------------------------------------------------- conversions
def module_for(config: Union[BackboneConfig, CriticConfig, Mapping[str, Any]]) -> torch.nn.Module:
    """A new PyTorch twin (PyTorch's own initialisation) of the network a configuration
    describes: a backbone's :class:`rmtl.models.BackboneConfig` or a critic's
    :class:`rmtl.critic.CriticConfig`, or either as a dict (``net.config.to_dict()``).

    Parameters
    ----------
    config : BackboneConfig, CriticConfig or mapping
        The configuration; a mapping with a ``name`` key is a backbone's (the name matched
        case-insensitively, as :func:`rmtl.models.create` does; a ValueError if it is not a
        backbone), one without is a critic's.

    Returns
    -------
    torch.nn.Module
        A backbone twin (:class:`SingleTask`, ..., :class:`AITM`) or :class:`CriticNeg`,
        whose ``rmtl_config`` holds every entry of the configuration.

    Raises
    ------
    ValueError
        When the configuration's ``name`` is not a backbone with a twin here.
    """
    c = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    args = [
        list(c["field_dims"]),
        c["num_dense"],
        c["embed_dim"],
        list(c["bottom_dims"]),
        list(c["tower_dims"]),
        c["dropout"],
    ]
    if "name" not in c:
        module: torch.nn.Module = CriticNeg(*args)
    else:
        if str(c["name"]).lower() not in TWINS:
            raise ValueError(f"config: unknown backbone {c['name']!r}; one of {sorted(TWINS)}")
        c["name"] = str(c["name"]).lower()  # as rmtl.models.create reads it
        args.insert(2, c["num_tasks"])
        experts = {} if c.get("num_experts") is None else {"num_experts": c["num_experts"]}
        module = TWINS[c["name"]](*args, **experts)
    module.rmtl_config = {**module.rmtl_config, **c}  # the seed and output bias too
    return module


def state_dict_to_torch(state: Mapping[str, Any]) -> OrderedDict[str, torch.Tensor]:
    """A state dict of arrays (``net.state_dict()``: NumPy float32) as one of torch tensors
    (copies, float32, on the CPU) that ``torch.nn.Module.load_state_dict`` accepts.

    Parameters
    ----------
    state : mapping of str to array-like
        Parameter names to arrays.

    Returns
    -------
    OrderedDict of str to torch.Tensor
        The same keys, in the same order.
    """
    return OrderedDict(
        (k, torch.from_numpy(np.array(_detach(v), dtype=np.float32, copy=True)))
        for k, v in state.items()
    )


def state_dict(net: Net) -> OrderedDict[str, torch.Tensor]:
    """A backbone's or critic's weights as torch tensors (copies) under the reference module's
    keys: ``torch_module.load_state_dict(rmtl.torch.state_dict(model))``.

    Parameters
    ----------
    net : Net
        An rmtl backbone or :class:`rmtl.Critic` (a TypeError otherwise).

    Returns
    -------
    OrderedDict of str to torch.Tensor
        Float32 CPU tensors, keyed as ``net.state_dict()``.

    Raises
    ------
    TypeError
        When ``net`` is not an rmtl backbone or :class:`rmtl.Critic`.
    """
    if not isinstance(net, Net):
        raise TypeError(f"net: expected an rmtl backbone or rmtl.Critic, got {type(net).__name__}")
    return state_dict_to_torch(net.state_dict())


def to_torch(net: Net) -> torch.nn.Module:
    """The PyTorch twin of a backbone or critic, holding a copy of its weights, in the same
    mode (``training``). It computes the same function: predictions equal rmtl's to float
    rounding; dropout masks in training mode are PyTorch's own. The module's
    ``rmtl_config`` holds the network's configuration (:func:`from_torch` reads it).

    Backbones take ``(x_cat, x_num)``: codes (n, F) int64 and dense features (n, D)
    float32, and return (n, T) probabilities; critics take ``(x_cat, x_num, action)`` and
    return Q (n,).

    Parameters
    ----------
    net : Net
        An rmtl backbone or :class:`rmtl.Critic` (a TypeError otherwise).

    Returns
    -------
    torch.nn.Module
        The twin (a backbone twin of this module or :class:`CriticNeg`).

    Raises
    ------
    TypeError
        When ``net`` is not an rmtl backbone or :class:`rmtl.Critic`.
    """
    if not isinstance(net, Net):
        raise TypeError(f"net: expected an rmtl backbone or rmtl.Critic, got {type(net).__name__}")
    module = module_for(net.config)
    module.load_state_dict(state_dict(net), strict=True)
    return module.train(net.training)


def from_torch(module: torch.nn.Module, like: Optional[Net] = None, strict: bool = True) -> Net:
    """The rmtl network holding a copy of a PyTorch module's weights, in the module's mode.

    The network's configuration comes from ``like`` (an rmtl backbone or critic of the same
    architecture: its config, seed included, is used; its weights are not), else from the
    module's ``rmtl_config`` (every module of :func:`to_torch` and :func:`module_for`, and the
    twin classes here, carry one). Any module with the reference module's ``state_dict()``
    keys works with ``like``: the authors' own models, for one. The Adam state starts fresh
    (a torch module holds none). ``strict=False`` ignores missing and unexpected keys.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose ``state_dict()`` is copied.
    like : Net or None, default None
        An rmtl network whose configuration to use; None reads ``module.rmtl_config``
        (a ValueError if the module has none).
    strict : bool, default True
        Whether the keys must match exactly (as ``load_state_dict``'s ``strict``).

    Returns
    -------
    Net
        A backbone (when the configuration names one) or an :class:`rmtl.Critic`.

    Raises
    ------
    TypeError
        When ``like`` is given and is not an rmtl backbone or :class:`rmtl.Critic`.
    ValueError
        When ``like`` is None and ``module`` has no ``rmtl_config`` mapping; or when the
        module's weights do not load (:meth:`rmtl.models.Net.load_state_dict`: with
        ``strict``, keys that are not the network's; a tensor not of its parameter's shape
        or holding NaN or infinity).
    """
    if like is not None:
        if not isinstance(like, Net):
            raise TypeError(
                f"like: expected an rmtl backbone or rmtl.Critic, got {type(like).__name__}"
            )
        config = like.config.to_dict()
    elif isinstance(getattr(module, "rmtl_config", None), Mapping):
        config = dict(module.rmtl_config)
    else:
        raise ValueError(
            f"module: a {type(module).__name__} carries no rmtl_config; pass like=, an rmtl "
            "network of the same architecture (rmtl.models.create(...) or rmtl.Critic(...))"
        )
    net: Net = create(**config) if "name" in config else Critic(**config)
    net.load_state_dict(module.state_dict(), strict=strict)
    return net.train(module.training)


def export_onnx(
    net: Net,
    path: Union[str, os.PathLike[str]],
    opset_version: Optional[int] = None,
    dynamo: bool = False,
) -> None:
    """Write a backbone or critic as an ONNX model (evaluation mode; needs the ``onnx``
    package): inputs ``sparse`` (n, F) int64, ``dense`` (n, D) float32 (and ``action`` (n,)
    float32 for a critic), any batch size n; output ``prob`` (n, T) or ``q`` (n,).
    ``onnxruntime`` then predicts what ``net.predict`` does, to float rounding (the test
    suite checks 1e-5 for every backbone and the critic).

    The export traces :func:`to_torch`'s module with PyTorch's TorchScript exporter (its
    deprecation warning is silenced here); ``dynamo=True`` uses the ``torch.export`` one,
    which also needs ``onnxscript``.

    Parameters
    ----------
    net : Net
        An rmtl backbone or :class:`rmtl.Critic`.
    path : str or os.PathLike
        The ONNX file to write.
    opset_version : int or None, default None
        ONNX opset; None takes PyTorch's default.
    dynamo : bool, default False
        Use the ``torch.export`` exporter instead of the TorchScript one.
    """
    module = to_torch(net).eval()
    c = net.config
    args: tuple[torch.Tensor, ...] = (
        torch.zeros((2, len(c.field_dims)), dtype=torch.long),
        torch.zeros((2, c.num_dense), dtype=torch.float32),
    )
    names = ["sparse", "dense"]
    if isinstance(net, Critic):
        args += (torch.zeros(2, dtype=torch.float32),)
        names.append("action")
    output = "q" if isinstance(net, Critic) else "prob"
    with warnings.catch_warnings():
        for message in ("You are using the legacy TorchScript", "The feature will be removed"):
            warnings.filterwarnings("ignore", message, DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            os.fspath(path),
            input_names=names,
            output_names=[output],
            dynamic_axes={n: {0: "n"} for n in [*names, output]},
            opset_version=opset_version,
            dynamo=bool(dynamo),
        )
