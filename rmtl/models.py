"""Multi-task backbones over the C core, with PyTorch-like module conventions.

Every backbone owns one flat float32 buffer each for parameters, gradients and Adam's
two moments; :meth:`Backbone.named_parameters` hands out zero-copy views into it, and
:meth:`Backbone.state_dict` uses exactly the keys and shapes of the reference PyTorch
modules (``embedding.embedding.weight``, ``bottom.mlp.0.weight``, ``tower.1.mlp.6.bias``,
...), so weights move between the two in either direction.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, TypeVar

import numpy as np

from . import _core
from ._arrays import _detach, as_codes, as_dense, as_float, as_labels
from ._io import CorruptFileError, open_npz, save_npz
from .balancers import Balancer

__all__ = [
    "Net",
    "BackboneConfig",
    "Backbone",
    "SingleTask",
    "SharedBottom",
    "ESMM",
    "OMoE",
    "MMoE",
    "PLE",
    "PLEPaper",
    "AITM",
    "create",
    "check_compat",
    "save",
    "load",
]


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild a backbone (defaults: the values of the authors' code).

    Parameters
    ----------
    name : str
        The backbone's name (a key of :data:`BACKBONES`).
    field_dims : tuple of int
        Cardinality of every categorical field.
    num_dense : int
        Number of numerical features.
    num_tasks : int
        Number of tasks.
    embed_dim : int
        Embedding width (128).
    bottom_dims, tower_dims : tuple of int
        MLP widths of the shared bottom (or experts) and of each task's tower.
    dropout : float
        Dropout rate (0.2).
    seed : int
        Initialisation and dropout seed.
    num_experts : int or None
        Experts of OMoE, MMoE and the PLEs (None for the others).
    """

    name: str
    field_dims: tuple[int, ...]
    num_dense: int
    num_tasks: int
    embed_dim: int = 128
    bottom_dims: tuple[int, ...] = (512, 256)
    tower_dims: tuple[int, ...] = (128, 64)
    dropout: float = 0.2
    seed: int = 0
    num_experts: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain dict.

        Returns
        -------
        dict
            JSON-ready; ``BackboneConfig(**d)`` rebuilds the config.
        """
        return dataclasses.asdict(self)


N = TypeVar("N", bound="Net")


class Net:
    """What backbones and critics share: a core object (``rmtl._core.Net``) owning one flat
    float32 buffer each for parameters, gradients and Adam's two moments, named zero-copy
    views into them, PyTorch-like modes, state dicts, optimizer state and files.

    Networks pickle and copy (:func:`copy.copy` and :func:`copy.deepcopy` alike give an
    independent network: the buffers belong to the core object, so no copy shares weights)
    through their state: configuration, weights, Adam moments and counters, modes and any
    attributes set on the object; the copy predicts and goes on training bit for bit as the
    original would."""

    config: Any
    # the JSON document of a file that holds a network of this kind, and what such a file is
    # called in errors (each kind of network sets both; rmtl.load reads every kind)
    _config_key = ""
    _what = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_config_key" in cls.__dict__:
            _KINDS[cls._config_key] = cls

    def _bind(self, core: Any) -> None:
        """Attach the core object and build the named views of its buffers."""
        self._core = core
        self._table = core.param_table()
        self._flat = {b: core.buffer(b) for b in ("param", "grad", "adam_m", "adam_v")}
        self._views = {
            b: OrderedDict((n, buf[o : o + int(np.prod(s))].reshape(s)) for n, o, s in self._table)
            for b, buf in self._flat.items()
        }

    def _rebuild(self: N) -> N:
        """A fresh network of the same configuration."""
        raise NotImplementedError

    # ------------------------------------------------------------------ modes
    @property
    def training(self) -> bool:
        """True in training mode (dropout active)."""
        return self._core.training

    def train(self: N, mode: bool = True) -> N:
        """Set training mode (dropout on), like ``torch.nn.Module.train``.

        Parameters
        ----------
        mode : bool
            True: training mode; False: evaluation mode.

        Returns
        -------
        Net
            self.
        """
        self._core.training = bool(mode)
        return self

    def eval(self: N) -> N:
        """Set evaluation mode (dropout off).

        Returns
        -------
        Net
            self.
        """
        return self.train(False)

    @property
    def first_layer(self) -> str:
        """How the first layer over the embedding runs, in training and prediction.

        ``"distinct"``: the distinct first layer, over each field's distinct codes in the batch
        (``E_f[U_f] @ W_f`` once per code, rows sum their codes' results; gradients aggregated
        by code), which does ``u_f / batch`` of the plain product's work for a field with
        ``u_f`` distinct codes; and the numerical layer ``Linear(num_dense, embed_dim)`` (a
        critic's action layer too) folded into the distinct first layer, which then reads the
        ``num_dense`` inputs instead of ``embed_dim`` columns. ``"plain"``: the product over
        every row of the concatenated embedding. ``"auto"`` (default) chooses per field, and
        for the folding, per batch by cost, so a field whose codes are nearly all distinct (an
        item id with millions of codes) keeps the plain product. All three give the same
        results up to float rounding."""
        return {v: k for k, v in _core.enums["first_layer"].items()}[self._core.first_layer]

    @first_layer.setter
    def first_layer(self, mode: str) -> None:
        if mode not in _core.enums["first_layer"]:
            raise ValueError(
                f"first_layer: expected one of {sorted(_core.enums['first_layer'])}, got {mode!r}"
            )
        self._core.first_layer = _core.enums["first_layer"][mode]

    def adam_step(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        """One Adam step with ``torch.optim.Adam`` semantics over the current gradients.

        Parameters
        ----------
        lr : float
            Learning rate.
        betas : (float, float)
            Adam's moment decay rates.
        eps : float
            Adam's epsilon.
        weight_decay : float
            L2 penalty added to the gradients (torch.optim.Adam's ``weight_decay``).
        """
        self._core.adam_step(
            lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay
        )

    # ------------------------------------------------------------------ parameters
    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every parameter tensor with its name.

        Returns
        -------
        iterator of (str, float32 array)
            (name, zero-copy view) for every tensor, in the core's table order; writing a
            view changes the model.
        """
        return iter(self._views["param"].items())

    def parameters(self) -> list[np.ndarray]:
        """Every parameter tensor.

        Returns
        -------
        list of float32 array
            Zero-copy views of every parameter tensor, in the order of
            :meth:`named_parameters`; writing a view changes the model.
        """
        return list(self._views["param"].values())

    def named_grads(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every parameter's gradient with its name.

        Returns
        -------
        iterator of (str, float32 array)
            (name, zero-copy view of its gradient) from the last backward call, in the order
            of :meth:`named_parameters`.
        """
        return iter(self._views["grad"].items())

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters (the length of the flat parameter buffer)."""
        return int(self._flat["param"].size)

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter under the reference PyTorch module's key and shape.

        Returns
        -------
        collections.OrderedDict
            Name -> float32 array copy.
        """
        return OrderedDict((k, v.copy()) for k, v in self._views["param"].items())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Copy parameters in from a mapping of name -> array-like.

        Everything is checked before anything is written, so a bad dict leaves the model
        unchanged.

        Parameters
        ----------
        state_dict : mapping
            Name -> array-like (NumPy arrays, torch tensors, ...), as :meth:`state_dict`.
        strict : bool
            False: ignore missing and unexpected keys (else a ValueError names them).

        Raises
        ------
        TypeError
            When a value is not a real numeric array.
        ValueError
            With ``strict``, when keys are missing or unexpected (naming them); and when a
            value does not have its parameter's shape or holds NaN or infinity.
        """
        views = self._views["param"]
        missing = [k for k in views if k not in state_dict]
        unexpected = [k for k in state_dict if k not in views]
        if strict and (missing or unexpected):
            raise ValueError(
                f"state_dict: missing keys {missing}, unexpected keys {unexpected}; "
                f"expected exactly the keys of {type(self).__name__}.state_dict()"
            )
        staged = {}
        for k, v in state_dict.items():
            if k not in views:
                continue
            a = as_float(_detach(v), views[k].shape, f"state_dict[{k!r}]")
            staged[k] = a
        for k, a in staged.items():
            views[k][...] = a

    def optimizer_state(self) -> dict[str, Any]:
        """Adam moments and counters, for checkpoints that resume training.

        Returns
        -------
        dict
            ``adam_m``, ``adam_v`` (copies), ``steps`` and ``counter``.
        """
        steps, counter = self._core.steps
        return {
            "adam_m": self._flat["adam_m"].copy(),
            "adam_v": self._flat["adam_v"].copy(),
            "steps": steps,
            "counter": counter,
        }

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`optimizer_state` returned.

        Parameters
        ----------
        state : mapping
            ``adam_m``, ``adam_v``, ``steps`` and ``counter``.
        """
        n = self._flat["param"].size
        m = as_float(state["adam_m"], (n,), "adam_m")
        v = as_float(state["adam_v"], (n,), "adam_v")
        self._core.steps = (int(state["steps"]), int(state["counter"]))
        self._flat["adam_m"][...] = m
        self._flat["adam_v"][...] = v

    def clone(self: N) -> N:
        """A copy of this model.

        Returns
        -------
        Net
            A new model with the same config, weights, modes (training, first_layer) and
            optimizer state.
        """
        other = self._rebuild()
        other._flat["param"][...] = self._flat["param"]
        other.load_optimizer_state(self.optimizer_state())
        other.first_layer = self.first_layer
        return other.train(self.training)

    def _arrays(self) -> dict[str, np.ndarray]:
        """Weights and optimizer state as the arrays a file stores (:meth:`_restore` reads them)."""
        opt = self.optimizer_state()
        keys = np.frombuffer(json.dumps(list(self._views["param"])).encode(), np.uint8)
        return {
            "param": self._flat["param"].copy(),
            "adam_m": opt["adam_m"],
            "adam_v": opt["adam_v"],
            "steps": np.array([opt["steps"], opt["counter"]], np.uint64),
            "keys": keys,
        }

    def _save(
        self,
        path: str | os.PathLike[str],
        config_key: str,
        documents: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Config (JSON under ``config_key``), weights, optimizer state and any further JSON
        ``documents`` to one .npz file at exactly ``path``, written atomically."""
        save_npz(path, self._arrays(), {config_key: self.config.to_dict(), **(documents or {})})

    def _restore(self: N, z: Any) -> N:
        """Weights and optimizer state from an opened file :meth:`_save` wrote; eval mode. The
        tensor names the file lists (older files list none) must be this network's."""
        steps = z["steps"]
        self._load_arrays(
            z.json("keys") if "keys" in z else None,
            z["param"],
            z["adam_m"],
            z["adam_v"],
            (int(steps[0]), int(steps[1])),
            "the file's",
        )
        return self.eval()

    def _load_arrays(
        self,
        keys: Optional[list[str]],
        param: Any,
        adam_m: Any,
        adam_v: Any,
        steps: tuple[int, int],
        whose: str,
    ) -> None:
        """Weights, Adam moments and ``(adam steps, dropout counter)`` into this network,
        checked first; ``keys`` (None: unchecked) must be this network's tensor names."""
        if keys is not None and list(keys) != list(self._views["param"]):
            raise ValueError(
                f"{type(self).__name__}: {whose} tensors are not this network's (another "
                "parameter layout under the same configuration); rebuild the network it was saved "
                "from"
            )
        param = as_float(param, (self.num_parameters,), "param")
        self.load_optimizer_state(
            {"adam_m": adam_m, "adam_v": adam_v, "steps": steps[0], "counter": steps[1]}
        )
        self._flat["param"][...] = param

    # ------------------------------------------------------------------ pickle and copy
    @classmethod
    def _build(cls, **config: Any) -> Net:
        """The network a saved configuration describes."""
        raise NotImplementedError

    def _init_from_config(self, config: Mapping[str, Any]) -> None:
        """Run this class's constructor on ``self`` from a saved configuration."""
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        """What pickle, :func:`copy.copy` and :func:`copy.deepcopy` keep: the configuration,
        weights, Adam moments and counters (the same as a file holds), the modes (training,
        ``first_layer``) and any attributes set on the object."""
        steps, counter = self._core.steps
        return {
            "config": self.config.to_dict(),
            "keys": list(self._views["param"]),
            "param": self._flat["param"].copy(),
            "adam_m": self._flat["adam_m"].copy(),
            "adam_v": self._flat["adam_v"].copy(),
            "steps": (steps, counter),
            "training": self.training,
            "first_layer": self.first_layer,
            "attributes": {k: v for k, v in self.__dict__.items() if k not in _BOUND},
        }

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        """Rebuild the core object from :meth:`__getstate__`'s state: a new network that
        predicts and goes on training bit for bit as the original would."""
        self._init_from_config(state["config"])
        self._load_arrays(
            state["keys"],
            state["param"],
            state["adam_m"],
            state["adam_v"],
            tuple(state["steps"]),
            "the pickled",
        )
        self.first_layer = state["first_layer"]
        self.train(state["training"])
        self.__dict__.update(state["attributes"])

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write config, weights and optimizer state to one .npz file, atomically.

        The same as :func:`rmtl.save(net, path) <rmtl.models.save>`; :meth:`load` and
        :func:`rmtl.load` rebuild it.

        Parameters
        ----------
        path : str or os.PathLike
            The file, exactly (no ``.npz`` is appended).
        """
        self._save(path, self._config_key)

    @classmethod
    def load(cls: type[N], path: str | os.PathLike[str]) -> N:
        """Rebuild a network of this class written by :meth:`save` or :func:`rmtl.save`.

        Parameters
        ----------
        path : str or os.PathLike
            The file.

        Returns
        -------
        Net
            The network, in evaluation mode.

        Raises
        ------
        rmtl.CorruptFileError
            (a ValueError) naming the file when it is damaged or of another kind (a critic's
            for a backbone).
        TypeError
            When it holds a backbone of another class (``ESMM.load`` of an MMoE's file).
        """
        net = _load_kinds(path, [cls._config_key])
        if not isinstance(net, cls):
            raise TypeError(
                f"{cls.__name__}.load: {os.fspath(path)} holds a {type(net).__name__}; use "
                "rmtl.load, which returns whatever the file holds"
            )
        return net


# what a network's __dict__ holds for its core object; the rest pickles as it is
_BOUND = frozenset({"_core", "_table", "_flat", "_views", "config"})


# the kinds of network a file may hold: its config document -> the class that reads it
_KINDS: dict[str, type[Net]] = {}


# The constructor's parameters, shared by Backbone and every backbone class (appended to
# each subclass's docstring by Backbone.__init_subclass__).
_BACKBONE_PARAMETERS = """Parameters
----------
field_dims : sequence of int
    Cardinality of every categorical field (``SessionData.field_dims``); at least one
    field, each >= 1.
num_dense : int
    Number of numerical features (``SessionData.num_dense``), >= 0.
num_tasks : int
    Number of tasks, 1 to ``rmtl._core.max_tasks`` (ESMM: exactly 2).
embed_dim : int, default 128
    Embedding width.
bottom_dims : sequence of int, default (512, 256)
    MLP widths of the bottom (or of every expert; the PLEs: one level per width); 1 to
    ``rmtl._core.max_layers`` positive widths.
tower_dims : sequence of int, default (128, 64)
    Hidden widths of each task's tower, 0 to ``rmtl._core.max_layers`` positive widths.
dropout : float, default 0.2
    Dropout rate, in [0, 1).
seed : int, default 0
    Initialisation and dropout seed.
num_experts : int or None, default None
    Experts of the expert backbones (OMoE, MMoE, both PLEs; None means 8; the PLEs need an
    even count); must stay None for the others (a ValueError otherwise)."""

_BACKBONE_ATTRIBUTES = """Attributes
----------
config : BackboneConfig
    Everything needed to rebuild it."""

_BACKBONE_RAISES = """Raises
------
ValueError
    Naming the parameter: ``num_experts`` given to a backbone without experts, or a value
    outside the ranges above: ``field_dims`` empty or with an entry below 1, ``num_dense``
    below 0, ``num_tasks`` outside 1 to ``rmtl._core.max_tasks`` (ESMM: not 2), ``embed_dim``
    below 1, ``bottom_dims`` empty, ``bottom_dims`` or ``tower_dims`` with a width below 1 or
    more than ``rmtl._core.max_layers`` widths, ``dropout`` outside [0, 1), ``num_experts``
    outside 1 to ``rmtl._core.max_experts`` (OMoE, MMoE), or odd, below 2 or with
    ``(num_tasks + 1) * num_experts / 2`` above ``rmtl._core.max_experts`` (the PLEs)."""


class Backbone(Net):
    __doc__ = f"""Base class: a multi-task model predicting one probability per task.

Subclasses set ``name`` (a key of ``rmtl._core.enums["backbone"]``); build one with
:func:`rmtl.models.create` or its class, and train it with :class:`rmtl.Trainer` or
:class:`rmtl.RMTL`.

{_BACKBONE_PARAMETERS}

{_BACKBONE_ATTRIBUTES}

{_BACKBONE_RAISES}
TypeError
    When ``Backbone`` itself (or a subclass without a backbone ``name``) is constructed:
    build a subclass such as :class:`MMoE`, or use :func:`rmtl.models.create`.
"""

    name = ""
    _default_experts: Optional[int] = None
    _config_key = "config"
    _what = "model"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # a backbone's docstring describes the model; the parameters are the shared ones
        super().__init_subclass__(**kwargs)
        doc = cls.__dict__.get("__doc__")
        if doc and "Parameters\n----------" not in inspect.cleandoc(doc):
            cls.__doc__ = (
                f"{inspect.cleandoc(doc)}\n\n{_BACKBONE_PARAMETERS}\n\n{_BACKBONE_ATTRIBUTES}"
                f"\n\n{_BACKBONE_RAISES}\n"
            )

    def __init__(
        self,
        field_dims: Sequence[int],
        num_dense: int,
        num_tasks: int,
        embed_dim: int = 128,
        bottom_dims: Sequence[int] = (512, 256),
        tower_dims: Sequence[int] = (128, 64),
        dropout: float = 0.2,
        seed: int = 0,
        num_experts: Optional[int] = None,
    ) -> None:
        if self.name not in _core.enums["backbone"]:
            raise TypeError(
                f"{type(self).__name__}: expected a backbone class with a name among "
                f"{sorted(_core.enums['backbone'])}, got name {self.name!r}; build a subclass "
                "(e.g. rmtl.models.MMoE) or use rmtl.models.create(name, ...)"
            )
        if num_experts is None:
            num_experts = self._default_experts
        elif self._default_experts is None:
            raise ValueError(
                f"num_experts: {type(self).__name__} has no experts; leave num_experts=None"
            )
        cfg = BackboneConfig(
            self.name,
            tuple(int(d) for d in field_dims),
            int(num_dense),
            int(num_tasks),
            int(embed_dim),
            tuple(int(d) for d in bottom_dims),
            tuple(int(d) for d in tower_dims),
            float(dropout),
            int(seed),
            None if num_experts is None else int(num_experts),
        )
        _check_config(cfg)
        self.config = cfg
        self._bind(
            _core.Model(
                kind=_core.enums["backbone"][self.name],
                field_dims=np.asarray(cfg.field_dims, np.int32),
                num_dense=cfg.num_dense,
                num_tasks=cfg.num_tasks,
                embed_dim=cfg.embed_dim,
                bottom_dims=cfg.bottom_dims,
                tower_dims=cfg.tower_dims,
                dropout=cfg.dropout,
                seed=cfg.seed & (2**64 - 1),
                num_experts=cfg.num_experts or 0,
            )
        )

    # ------------------------------------------------------------------ compute
    def __call__(self, sparse: Any, dense: Any = None) -> np.ndarray:
        """Forward pass in the current mode.

        Parameters
        ----------
        sparse : int array (n, F)
            Categorical codes.
        dense : float array (n, D) or None
            Numerical features.

        Returns
        -------
        ndarray (n, T) float32
            Probabilities.
        """
        codes = as_codes(sparse, len(self.config.field_dims))
        return self._core.forward(codes, as_dense(dense, codes.shape[0], self.config.num_dense))

    forward = __call__

    def predict(
        self, sparse: Any, dense: Any = None, batch_size: int = 16384, tables: Optional[bool] = None
    ) -> np.ndarray:
        """Evaluation-mode probabilities, in batches (Ctrl-C stops between them).

        Parameters
        ----------
        sparse : int array (n, F)
            Categorical codes (``SessionData.sparse``).
        dense : float array (n, D) or None
            Numerical features (``SessionData.dense``).
        batch_size : int
            Rows per forward pass.
        tables : None, True or False
            Whether the first layers run from tables (Notes).

        Returns
        -------
        ndarray (n, T) float32
            One probability per row and task.

        Raises
        ------
        TypeError
            When ``tables`` is not None, True or False, ``sparse`` is not an integer array
            or ``dense`` not a real numeric one.
        ValueError
            When ``sparse`` is not (n, F) or holds a code outside its field's
            ``[0, field_dims[f])``; ``dense`` is None for a model with numerical features,
            not (n, D) or not finite; or ``batch_size`` is below 1.

        Notes
        -----
        The first layers over the embedding (bottoms, or the experts' and gates' first layers)
        may run from tables: for every code, its embedding row times the layer's weights,
        built from the current weights at every call of ``batch_size * 8`` rows; a row's
        output is then the sum of its codes' table rows plus the dense part, equal to the
        plain product up to float rounding. ``tables=None`` uses them when that pays
        (``sum(field_dims) * 4 <= rows * (fields + 1)``, ``embed_dim >= 16``, tables of at
        most 256 MB, freed when the call returns); ``True`` forces them, ``False`` never.
        """
        if tables is not None and not isinstance(tables, (bool, np.bool_)):
            raise TypeError(f"tables: expected None, True or False, got {tables!r}")
        codes = as_codes(sparse, len(self.config.field_dims))
        dense = as_dense(dense, codes.shape[0], self.config.num_dense)
        out = np.empty((codes.shape[0], self.config.num_tasks), np.float32)
        batch_size = int(batch_size)
        if 0 < codes.shape[0] < batch_size:  # the same one batch, a workspace of its rows only
            batch_size = codes.shape[0]
        step = max(1, batch_size) * 8
        mode = _core.enums["tables"]["auto" if tables is None else "always" if tables else "never"]
        for start in range(0, codes.shape[0], step):
            self._core.predict(
                sparse=codes[start : start + step],
                dense=dense[start : start + step],
                out=out[start : start + step],
                batch_size=batch_size,
                tables=mode,
            )
        return out

    def loss_and_grad(self, sparse: Any, dense: Any, labels: Any, weights: Any = None) -> float:
        """Zero the gradients, run forward (current mode) and backward of
        ``(1/T) sum_k mean_i w_ik BCE(y_ik, p_ik)``; gradients land in :meth:`named_grads`.

        Parameters
        ----------
        sparse : int array (n, F)
            Categorical codes.
        dense : float array (n, D) or None
            Numerical features.
        labels : array (n, T)
            0/1 labels.
        weights : array (n, T), optional
            Non-negative loss weights (default: all one).

        Returns
        -------
        float
            The loss.

        Raises
        ------
        TypeError
            When ``sparse`` is not an integer array, or ``dense``, ``labels`` or ``weights``
            not a real numeric one.
        ValueError
            When ``weights`` is negative somewhere; an array does not have its shape above
            (``n`` rows, at least one) or holds NaN or infinity; ``dense`` is None for a model
            with numerical features; a label is not 0/1; or a code is outside its field's
            ``[0, field_dims[f])``.
        """
        codes = as_codes(sparse, len(self.config.field_dims))
        n, T = codes.shape[0], self.config.num_tasks
        w = None if weights is None else as_float(weights, (n, T), "weights")
        if w is not None and (w < 0).any():
            raise ValueError("weights: expected non-negative loss weights")
        return self._core.loss_backward(
            sparse=codes,
            dense=as_dense(dense, n, self.config.num_dense),
            labels=as_labels(labels, n, T),
            weights=w,
        )

    def shared_parameters(self) -> list[str]:
        """Names of the parameters the tasks share: where a loss balancer's direction goes
        (``space="parameters"``; :mod:`rmtl.balancers`).

        Returns
        -------
        list of str
            Parameter names (as in :meth:`named_parameters`), in the core's table order;
            empty for SingleTask.

        Notes
        -----
        The split follows torch-rechub's for MetaBalance: the embedding, the dense layer and
        everything before the task-specific parts (SharedBottom's bottom; OMoE's experts and
        its one gate; MMoE's experts; both PLEs' extraction levels, gates included; AITM's
        bottoms). ESMM's tasks share the embedding and dense layer; SingleTask shares
        nothing. Towers, MMoE's gates and AITM's transfer layers are task-specific.
        """
        return [n for n, _, _ in self._table if n.startswith(self._shared)]

    def _shared_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """The shared parameters as ``(spans (n, 2) int64, lengths)``: the [lo, hi) ranges of
        the flat buffers they fill (adjacent tensors merged) and each tensor's length, in
        buffer order."""
        names = set(self.shared_parameters())
        spans: list[list[int]] = []
        lengths = []
        for name, off, shape in sorted(self._table, key=lambda t: t[1]):
            if name not in names:
                continue
            size = int(np.prod(shape))
            lengths.append(size)
            if spans and spans[-1][1] == off:
                spans[-1][1] = off + size
            else:
                spans.append([off, off + size])
        return np.asarray(spans, np.int64).reshape(-1, 2), np.asarray(lengths, np.int64)

    def train_chunk(
        self,
        rows: np.ndarray,
        sparse: np.ndarray,
        dense: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        critics: Optional[Sequence[Any]] = None,
        weighting: Optional[str] = None,
        lam: float = 0.0,
        extra: Optional[np.ndarray] = None,
        task_weights: Optional[Sequence[float]] = None,
        seed: int = 0,
        balancer: Optional[Balancer] = None,
    ) -> tuple[float, Optional[list[float]]]:
        """Many Adam steps in one C call with the GIL released, one per batch of ``rows``,
        each on the mean per-task BCE in training mode.

        This is the call :class:`rmtl.Trainer` makes; use it to write your own loop.

        Parameters
        ----------
        rows : int64 array
            Row indices into the training arrays; each batch is ``batch_size`` consecutive
            entries (the last batch may be short).
        sparse : int32 array (n, F)
            The training rows' categorical codes.
        dense : float32 array (n, D)
            Their numerical features.
        labels : float32 array (n, T)
            Their labels.
        batch_size : int
            Rows per Adam step (keyword-only, like every argument after ``labels``).
        lr : float
            Adam's learning rate.
        betas : (float, float)
            Adam's moment decay rates.
        eps : float
            Adam's epsilon.
        weight_decay : float
            L2 penalty added to the gradients (torch.optim.Adam's ``weight_decay``).
        critics : sequence of rmtl.Critic, optional
            One critic per task, in their current mode (``eval()`` for Q without dropout, as
            the paper), scoring the model's predictions for the weightings that read Q.
        weighting : str, optional
            Weights each row's loss as RMTL's stage 3 does: ``"rmtl"`` (``1 - lam Q_k``),
            ``"constant"`` (0.5; needs no critics), ``"label"`` (``1 - lam y Q_k``),
            ``"neg_q"`` (``-Q_k``), or one of two controls of the critics' effect,
            ``"static"`` and ``"permuted"`` (see Notes). None: the plain mean BCE.
        lam : float
            The weighting's lambda.
        extra : float32 array (n, X), optional
            Columns only the critics read, after the first ``critic num_dense - X`` columns of
            ``dense``, as :attr:`rmtl.SessionData.critic_only` lays out session context only
            the critics see (None: no extra columns).
        task_weights : sequence of float, optional
            The ``"static"`` weighting's weight per task: T finite values >= 0, required by
            this weighting and refused by the others.
        seed : int
            The ``"permuted"`` weighting's seed.
        balancer : rmtl.balancers.Balancer, optional
            Balances the task losses at every step (see Notes): a balancer over the model's
            tasks, bound to the length of :meth:`shared_parameters` (see
            :meth:`rmtl.balancers.Balancer.prepare`).

        Returns
        -------
        loss : float
            The sum over batches of batch loss times batch size.
        weight_sums : list of float or None
            With a weighting, the sum of the weights per task; else None.

        Raises
        ------
        FloatingPointError
            When a task loss or gradient becomes NaN or infinite, before the step.
        ValueError
            When ``weighting`` is unknown, or an argument does not fit the model.

        Notes
        -----
        ``"static"`` weights every row of task k by ``task_weights[k]`` (no critics read).
        ``"permuted"`` computes the ``"rmtl"`` weights, then permutes the rows of each
        batch's (B, T) weight matrix by one permutation of the batch (the same for every
        task), drawn from ``seed`` and the model's Adam step count
        (``_core.permutation(B, seed, step)``; the same seed gives the same permutations
        whatever the thread count or chunking).

        With ``balancer``, the task losses ``L_k = mean_i w_ik BCE_ik`` are balanced at every
        step as LibMTL does (on the summed loss): a balancer of the ``"losses"`` family
        weights them, a ``"gradients"`` one reads the per-task gradients of the shared
        parameters (one backward per task; ``samples`` batches per step) and its direction
        replaces their gradient, while every task-specific parameter gets its task's
        gradient. With ``space="representation"`` it reads the batch sums of the per-task
        gradients of the towers' inputs instead (the backwards stop there) and one backward
        below the towers sends down the combination of the per-row gradients it gives.
        """
        kind = None
        if weighting is not None:
            if weighting not in _core.enums["weighting"]:
                raise ValueError(
                    f"weighting: expected one of {sorted(_core.enums['weighting'])}, "
                    f"got {weighting!r}"
                )
            kind = _core.enums["weighting"][weighting]
        if critics is not None:
            critics = [c._core for c in critics]
        batch_size = int(batch_size)
        n_rows = len(rows) if hasattr(rows, "__len__") else 0
        if (balancer is None or balancer.samples == 1) and 0 < n_rows < batch_size:
            # one batch of every row either way: the C call reserves a workspace for
            # batch_size rows, so never more than there are (Trainer(batch_size=2**28) on 90)
            batch_size = n_rows
        return _core.train_chunk(
            model=self._core,
            rows=rows,
            sparse=sparse,
            dense=dense,
            labels=labels,
            batch_size=batch_size,
            lr=lr,
            beta1=betas[0],
            beta2=betas[1],
            eps=eps,
            weight_decay=weight_decay,
            critics=critics,
            weighting=kind,
            lam=lam,
            extra=extra if critics is not None else None,
            task_weights=None
            if task_weights is None
            else as_float(task_weights, (self.config.num_tasks,), "task_weights", finite=False),
            seed=int(seed),
            balancer=None if balancer is None else balancer.prepare(self),
            shared=None if balancer is None else self._shared_spans()[0],
            representation=balancer is not None and balancer.space == "representation",
        )

    def _rebuild(self) -> Backbone:
        return create(**self.config.to_dict())

    @classmethod
    def _build(cls, **config: Any) -> Backbone:
        """The backbone a saved configuration describes (its ``name`` picks the class)."""
        return create(**config)

    def _init_from_config(self, config: Mapping[str, Any]) -> None:
        Backbone.__init__(self, **{k: v for k, v in config.items() if k != "name"})

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(fields={len(c.field_dims)}, dense={c.num_dense}, "
            f"tasks={c.num_tasks}, "
            f"embed={c.embed_dim}, bottom={c.bottom_dims}, tower={c.tower_dims}, "
            f"dropout={c.dropout}, "
            f"params={self.num_parameters})"
        )


class SingleTask(Backbone):
    """One independent model per task: its own embedding, dense layer, bottom MLP and tower."""

    name = "singletask"
    _shared: tuple[str, ...] = ()


class SharedBottom(Backbone):
    """One bottom MLP over the shared embedding, one tower per task."""

    name = "sharedbottom"
    _shared: tuple[str, ...] = ("embedding.", "numerical_layer.", "bottom.")


class ESMM(Backbone):
    """Entire-space multi-task model (2 tasks): one bottom MLP and tower per task;
    output 1 = sigmoid(tower 1), output 2 = sigmoid(tower 2) * output 1 (CTCVR = CTR x CVR)."""

    name = "esmm"
    _shared: tuple[str, ...] = ("embedding.", "numerical_layer.")


class OMoE(Backbone):
    """One-gate mixture of experts: ``num_experts`` experts, each a bottom MLP over the shared
    embedding, mixed by one softmax gate ``gate = Linear(in, E)`` shared by all tasks; one
    tower per task reads the mixture. Keys: ``expert.<e>.mlp.*``, ``gate.0.*``,
    ``tower.<k>.mlp.*``."""

    name = "omoe"
    _shared: tuple[str, ...] = ("embedding.", "numerical_layer.", "expert.", "gate.")
    _default_experts = 8


class MMoE(Backbone):
    """Multi-gate mixture of experts: as :class:`OMoE` with one gate per task
    (``gate.<k>.0.*``); tower k reads the mixture of gate k."""

    name = "mmoe"
    _shared: tuple[str, ...] = ("embedding.", "numerical_layer.", "expert.")
    _default_experts = 8


class PLE(Backbone):
    """Progressive layered extraction as the authors' module builds it (``"ple"``).

    ``L = len(bottom_dims)`` levels, as the authors' module (``PLEModel``) builds them: keys
    ``expert.<i>.<e>.mlp.0.*`` (level i; expert e from 0 to ``T*E/2 + E/2 - 1``: task 0's
    ``E/2`` experts, task 1's, and so on, then the ``E/2`` shared ones), ``gate.<i>.<j>.0.*``
    (stream j from 0 to T: the T task gates, then the shared gate) and ``tower.<k>.mlp.*``.
    The PLE paper's version is :class:`PLEPaper` (``"ple_paper"``).

    Every expert is ``Linear(in_i, bottom_dims[i])`` + ReLU + dropout. Task stream k starts
    as the embedding; at every level it becomes the mixture, under its gate ``gate.<i>.<k>``
    (``Linear(in_i, E/2 + E/2)`` + softmax on stream k), of its own ``E/2`` experts and the
    ``E/2`` shared experts, all applied to stream k: the shared experts run once per task
    stream (at level 0 every stream is the embedding, so each expert runs once there).
    Towers read the task streams. The authors' module also runs a shared stream (all
    experts applied to it, mixed by gate ``gate.<i>.<T>``), but no task stream reads it, so
    its gates never get a gradient (``None`` in PyTorch, which Adam skips, weight decay
    included): rmtl declares them (same ``state_dict()``), skips the unread computation and
    never updates them. ``num_experts`` must be even.
    """

    name = "ple"
    _shared: tuple[str, ...] = ("embedding.", "numerical_layer.", "expert.", "gate.")
    _default_experts = 8


class PLEPaper(Backbone):
    """Progressive layered extraction as the PLE paper (Tang et al., RecSys 2020) and other
    libraries build it (``"ple_paper"``; :class:`PLE` is the authors' module): keys
    ``task_experts.<i>.<k>.<e>.mlp.0.*``, ``task_gates.<i>.<k>.0.*``,
    ``share_experts.<i>.<e>.mlp.0.*``, ``share_gates.<i>.0.*``, ``tower.<k>.mlp.*``.

    Level i has ``num_experts / 2`` experts per task and ``num_experts / 2`` shared experts,
    each ``Linear(in_i, bottom_dims[i])`` + ReLU + dropout. There are T + 1 streams (one per
    task, one shared), all starting as the embedding. Task k's experts read stream k and the
    shared experts read the shared stream, each evaluated once per level. Stream k becomes
    the mixture of its own and the shared experts under gate ``task_gates.<i>.<k>`` (on
    stream k); the shared stream becomes the mixture of all experts (tasks in order, then
    shared) under ``share_gates.<i>`` (on the shared stream), which the next level's task
    streams read through the shared experts. The last level declares a shared gate that
    nothing uses: it is in ``state_dict()``, receives no gradient and is never updated.
    Towers read the task streams. ``num_experts`` must be even. Not available with
    ``compat="authors"``.
    """

    name = "ple_paper"
    _shared: tuple[str, ...] = (
        "embedding.",
        "numerical_layer.",
        "task_experts.",
        "share_experts.",
        "task_gates.",
        "share_gates.",
    )
    _default_experts = 8


class AITM(Backbone):
    """Adaptive information transfer: one bottom MLP per task (``bottom.<k>.mlp.*``); for task
    i >= 1, ``p = g[i-1](f[i-1])`` and ``q = bottom_i(x)`` form two positions, ``V, K, Q =
    h1, h2, h3`` (shared ``Linear(d, d)``, d = bottom_dims[-1]) of each, and
    ``f[i] = sum_pos softmax_pos(<K, Q> / sqrt(d)) V``; tower i reads ``f[i]`` (``f[0]`` is
    bottom 0's output). With one task, h1..h3 exist (as in the reference) but stay unused.

    rmtl computes the same function without applying h1..h3 to the positions: ``<K, Q>`` is
    ``x^T S x + c . x`` plus a constant the softmax cancels (``S = (W2^T W3 + W3^T W2) / 2``,
    ``c = W2^T b3 + W3^T b2``) and ``sum_pos a V = W1 (sum_pos a x) + b1``, which takes 7
    products of (batch, d, d) per training step and transfer instead of 18 (results agree
    with the reference to float rounding)."""

    name = "aitm"
    _shared: tuple[str, ...] = ("embedding.", "numerical_layer.", "bottom.")


BACKBONES: dict[str, type[Backbone]] = {
    c.name: c for c in (SingleTask, SharedBottom, ESMM, OMoE, MMoE, PLE, PLEPaper, AITM)
}
# compat="authors" asks for the authors' module: every backbone except these is one
NOT_AUTHORS: dict[str, str] = {"ple_paper": "ple"}


def create(
    name: str,
    field_dims: Sequence[int],
    num_dense: int,
    num_tasks: int,
    *,
    compat: Optional[str] = None,
    **kwargs: Any,
) -> Backbone:
    """Build a backbone by name.

    Parameters
    ----------
    name : str
        ``singletask``, ``sharedbottom``, ``esmm``, ``omoe``, ``mmoe``, ``ple`` (the authors'
        PLE), ``ple_paper`` (the PLE paper's) or ``aitm``.
    field_dims : sequence of int
        Cardinality of every categorical field (``data.field_dims``).
    num_dense : int
        Number of numerical features (``data.num_dense``).
    num_tasks : int
        Number of tasks (``data.num_tasks``).
    compat : None or "authors"
        ``"authors"`` asks for the authors' module, which every backbone is except
        ``ple_paper`` (a ValueError names the one to use).
    **kwargs
        Go to the class (:class:`Backbone`'s parameters, e.g. ``embed_dim=16``,
        ``num_experts=8``).

    Returns
    -------
    Backbone

    Raises
    ------
    ValueError
        When ``name`` is not a backbone; when ``compat`` is neither None nor ``"authors"``,
        or is ``"authors"`` for ``ple_paper`` (:func:`check_compat`); or when the class
        refuses an argument (see :class:`Backbone`).

    Examples
    --------
    >>> import rmtl
    >>> data = rmtl.datasets.synthetic(n_users=20)
    >>> model = rmtl.models.create("mmoe", data.field_dims, data.num_dense, data.num_tasks,
    ...                            embed_dim=8)
    >>> model.predict(data.sparse, data.dense).shape == (len(data), 2)
    True
    """
    key = str(name).lower()
    if key not in BACKBONES:
        raise ValueError(f"name: unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    check_compat(key, compat)
    return BACKBONES[key](field_dims, num_dense, num_tasks, **kwargs)


def check_compat(name: str, compat: Optional[str]) -> None:
    """Check that a backbone may run with a compat setting.

    Parameters
    ----------
    name : str
        A backbone name (lower case).
    compat : None or "authors"
        The setting.

    Raises
    ------
    ValueError
        Unless ``compat`` is None or ``"authors"``, and, with ``"authors"``, unless backbone
        ``name`` is the authors' module (every backbone but ``ple_paper``).
    """
    if compat not in (None, "authors"):
        raise ValueError(f"compat: expected None or 'authors', got {compat!r}")
    if compat == "authors" and name in NOT_AUTHORS:
        raise ValueError(
            f"compat='authors': backbone {name!r} is not the authors' module; use "
            f"{NOT_AUTHORS[name]!r}, the authors' version, or drop compat"
        )


def save(net: Net, path: str | os.PathLike[str]) -> None:
    """Write a backbone's or a critic's config, weights and optimizer state to one .npz file,
    atomically; :func:`load` rebuilds it. The same as ``net.save(path)``.

    Parameters
    ----------
    net : Backbone or Critic
        The network.
    path : str or os.PathLike
        The file, exactly (no ``.npz`` is appended).

    Raises
    ------
    TypeError
        When ``net`` is not an rmtl backbone or :class:`rmtl.Critic` (e.g. a SessionData or
        ReplayBuffer, which save with their own ``.save(path)``).
    """
    if not isinstance(net, Net):
        raise TypeError(
            f"net: expected an rmtl backbone or rmtl.Critic, got {type(net).__name__}; "
            "SessionData and ReplayBuffer save with their own .save(path)"
        )
    net.save(path)


def load(path: str | os.PathLike[str]) -> Net:
    """Rebuild the backbone or critic written by :func:`save` or its ``save`` method.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    Backbone or Critic
        Whatever the file holds, in evaluation mode.

    Raises
    ------
    rmtl.CorruptFileError
        (a ValueError) naming the file when it is damaged.
    """
    return _load_kinds(path, list(_KINDS))


def _load_kinds(path: str | os.PathLike[str], keys: Sequence[str]) -> Any:
    """Open a file :meth:`Net._save` wrote, rebuild the network whose config document (the
    first of ``keys`` the file holds) it holds and restore its weights and optimizer state
    (evaluation mode)."""
    what = " or ".join(_KINDS[k]._what for k in keys)
    with open_npz(path, what) as z:
        key = next((k for k in keys if k in z), None)
        if key is None:
            raise CorruptFileError(
                path, f"not an rmtl {what} file (no {' or '.join(map(repr, keys))})"
            )
        config = z.json(key)
        if not isinstance(config, dict):
            raise CorruptFileError(path, f"not an rmtl {what} file ({key} is not a mapping)")
        return _build_saved(_KINDS[key]._build, config, z)


def _build_saved(build: Any, config: dict[str, Any], z: Any) -> Any:
    """``build(**config)`` restored from the opened file ``z``. A ``"ple"`` file that lists no
    tensor names was written when ``"ple"`` was the PLE paper's version: it is rebuilt as
    ``"ple_paper"``, with a warning (``"ple"`` is now the authors' module)."""
    if config.get("name") == "ple" and "keys" not in z:
        warnings.warn(
            "this 'ple' model was saved when rmtl's 'ple' was the PLE paper's version (keys "
            "task_experts..., share_experts...), now named 'ple_paper': loaded as 'ple_paper'; "
            "'ple' is now the authors' module",
            UserWarning,
            stacklevel=3,
        )
        config = {**config, "name": "ple_paper"}
    return build(**config)._restore(z)


def _check_config(c: BackboneConfig) -> None:
    if not c.field_dims or min(c.field_dims) < 1:
        raise ValueError(f"field_dims: expected at least one field, each >= 1, got {c.field_dims}")
    if c.num_dense < 0:
        raise ValueError(f"num_dense: expected >= 0, got {c.num_dense}")
    if not 1 <= c.num_tasks <= _core.max_tasks:
        raise ValueError(f"num_tasks: expected 1..{_core.max_tasks}, got {c.num_tasks}")
    if c.name == "esmm" and c.num_tasks != 2:
        raise ValueError(f"num_tasks: ESMM models exactly 2 tasks (CTR, CTCVR), got {c.num_tasks}")
    if c.embed_dim < 1:
        raise ValueError(f"embed_dim: expected >= 1, got {c.embed_dim}")
    for key in ("bottom_dims", "tower_dims"):
        dims = getattr(c, key)
        if (
            len(dims) > _core.max_layers
            or any(d < 1 for d in dims)
            or (key == "bottom_dims" and not dims)
        ):
            raise ValueError(
                f"{key}: expected {'1' if key == 'bottom_dims' else '0'}..{_core.max_layers} "
                f"positive widths, got {dims}"
            )
    if not 0.0 <= c.dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {c.dropout}")
    if c.name in ("omoe", "mmoe") and not 1 <= c.num_experts <= _core.max_experts:
        raise ValueError(f"num_experts: expected 1..{_core.max_experts}, got {c.num_experts}")
    if c.name in ("ple", "ple_paper") and (
        c.num_experts < 2
        or c.num_experts % 2
        or (c.num_tasks + 1) * (c.num_experts // 2) > _core.max_experts
    ):
        raise ValueError(
            f"num_experts: PLE needs an even count >= 2 with (num_tasks + 1) * num_experts / 2 "
            f"<= {_core.max_experts}, got {c.num_experts} for {c.num_tasks} tasks"
        )
