"""Loss balancers of the multi-task literature, in C: the methods researchers compare RMTL with.

A balancer turns the ``K`` task losses of a training step and their gradients with respect to
the shared parameters (the Jacobian, ``(K, P)``) into one direction ``(P,)`` that training
applies to the shared parameters, advancing its own state (UW's log-variances, DWA's loss
history, FAMO's logits, ...) as one training step would::

    import numpy as np, rmtl
    b = rmtl.balancers.create("uw", num_tasks=2)
    direction = b.step(np.array([0.5, 0.2], np.float32), jacobian)  # jacobian (2, P) float32
    b.weights                                                       # the step's task weights

The names are LibMTL's weighting strategies, lower-cased with underscores (``ew``, ``uw``,
``dwa``, ``gradnorm``, ``mgda``, ``pcgrad``, ...), plus ``linear`` (fixed task weights, the
"linear estimations" the RMTL paper compares with) and ``metabalance`` (He et al., WWW 2022);
:func:`names` lists them and :func:`hyperparameters` their settings, named as in LibMTL
without its method prefixes and with LibMTL's defaults. Scale convention: LibMTL's, the
direction of ``sum_k w_k L_k`` (``ew`` returns the sum of the task gradients).

The name is *balancer* because *weighting* already means RMTL's per-row stage-3 loss weights
(:class:`rmtl.RMTLConfig`'s ``weighting``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from . import _core

__all__ = [
    "Balancer",
    "LABELS",
    "SPACES",
    "create",
    "hyperparameters",
    "names",
    "representation_names",
]

#: where the gradients a balancer reads are taken: every shared parameter (LibMTL's default)
#: or the representation the towers read (LibMTL's ``rep_grad``: the Jacobian's row k is the
#: batch sum of task k's per-row gradients of its tower's input, ``(K, bottom_dims[-1])``)
SPACES = ("parameters", "representation")

#: every balancer's name as its paper writes it (table rows: ``UW-MMoE``)
LABELS = {
    "ew": "EW",
    "linear": "Linear",
    "uw": "UW",
    "gls": "GLS",
    "dwa": "DWA",
    "rlw": "RLW",
    "famo": "FAMO",
    "stch": "STCH",
    "gradnorm": "GradNorm",
    "imtl": "IMTL",
    "db_mtl": "DB-MTL",
    "excess_mtl": "ExcessMTL",
    "metabalance": "MetaBalance",
    "mgda": "MGDA",
    "pcgrad": "PCGrad",
    "gradvac": "GradVac",
    "graddrop": "GradDrop",
    "aligned_mtl": "Aligned-MTL",
    "moco": "MoCo",
    "cagrad": "CAGrad",
    "nash_mtl": "Nash-MTL",
    "upgrad": "UPGrad",
    "fairgrad": "FairGrad",
    "modo": "MoDo",
    "sdmgrad": "SDMGrad",
}
_SPECS: dict[str, dict[str, Any]] = {s["name"]: s for s in _core.balancer_specs()}
_ADAM = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


def names() -> list[str]:
    """Every balancer's name, in the core's table order.

    Returns
    -------
    list of str
        The names :func:`create` takes (``ew``, ``linear``, ``uw``, ...).
    """
    return list(_SPECS)


def representation_names() -> list[str]:
    """The balancers that work in ``space="representation"``.

    Returns
    -------
    list of str
        Every ``"losses"`` balancer (its weights do not read gradients, so both spaces train
        alike) and the gradient balancers whose direction is a combination of the task
        gradients (``gradnorm``, ``imtl``, ``excess_mtl``, ``mgda``, ``aligned_mtl``) or, for
        ``graddrop``, a per-feature mask of them, in the order of :func:`names`.

    Notes
    -----
    The others (``pcgrad``, ``cagrad``, ``nash_mtl``, ...) are refused there, as LibMTL
    refuses them.
    """
    return [n for n, s in _SPECS.items() if s["representation"]]


def hyperparameters(name: str) -> dict[str, Any]:
    """The hyperparameters of a balancer and their defaults.

    Parameters
    ----------
    name : str
        A balancer's name (:func:`names`).

    Returns
    -------
    dict
        ``{hyperparameter: default}`` (a choice's default as its word), the keywords
        :func:`create` takes for ``name``; empty for a method without hyperparameters.

    Raises
    ------
    ValueError
        When ``name`` is no balancer's name.

    Examples
    --------
    >>> hyperparameters("graddrop")
    {'leak': 0.0}
    """
    spec = _spec(name)
    return {h["name"]: _default(h) for h in spec["hyper"]}


def _spec(name: str) -> dict[str, Any]:
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(f"balancer: expected one of {names()}, got {name!r}")
    return _SPECS[name]


def _default(h: Mapping[str, Any]) -> Any:
    if h["choices"] is not None:
        return h["choices"].split("|")[int(h["default"])]
    return int(h["default"]) if h["integer"] else h["default"]


def _encode(name: str, h: Mapping[str, Any], value: Any) -> float:
    """A hyperparameter as the core reads it (a choice as its index); the core checks ranges."""
    key = h["name"]
    if h["choices"] is not None:
        words = h["choices"].split("|")
        if value not in words:
            raise ValueError(f"{key}: expected one of {words} for {name}, got {value!r}")
        return float(words.index(value))
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{key}: expected a number for {name}, got {value!r}")
    if h["integer"] and float(value) != math.floor(float(value)):
        raise ValueError(f"{key}: expected an integer for {name}, got {value!r}")
    return float(value)


class Balancer:
    """One balancer and its state; make it with :func:`create`.

    The arguments are :func:`create`'s, checked and with defaults filled in.

    Parameters
    ----------
    name : str
        The method (:func:`names`).
    num_tasks : int
        The number of tasks ``K`` it balances.
    space : str
        Where training takes the gradients (:data:`SPACES`).
    seed : int
        The random state of the methods that draw random numbers.
    hyper : mapping
        Every hyperparameter (:func:`hyperparameters`).
    fixed : float32 array (K,) or None
        ``linear``'s fixed task weights (None: all 1).
    adam : mapping
        The Adam settings of its trainable parameters: ``lr``, ``beta1``, ``beta2``, ``eps``,
        ``weight_decay``.
    segments : int64 array or None
        The lengths of the parameter tensors the gradient concatenates; given, the core
        object is built (and the settings checked) at once.

    Attributes
    ----------
    name : str
        The method.
    num_tasks : int
        The number of tasks ``K``.
    space : str
        ``"parameters"`` or ``"representation"``.
    seed : int
        As given.
    hyper : dict
        Every hyperparameter, defaults filled in.
    fixed : float32 array (K,) or None
        The fixed weights of ``linear``.
    family : str
        ``"losses"`` (weights from the losses alone: training needs one backward) or
        ``"gradients"`` (reads the per-task gradients).
    samples : int
        The number of batches a step reads (3 for ``modo`` and ``sdmgrad``, else 1).

    Raises
    ------
    TypeError
        With ``segments`` given (the core object is built at once, :meth:`bind`): when a
        numeric hyperparameter is a bool or not a number.
    ValueError
        When ``name`` is no balancer's name (:func:`names`); with ``segments`` given, when a
        hyperparameter is not one of its choices, not whole where an integer is expected, or
        out of its range.

    See Also
    --------
    create : makes one, checking every setting.

    Notes
    -----
    The core object is built at the first :meth:`step` (or :meth:`bind`, or
    :meth:`prepare`), when the gradient length ``P`` is known.
    """

    def __init__(
        self,
        name: str,
        num_tasks: int,
        space: str,
        seed: int,
        hyper: Mapping[str, Any],
        fixed: Optional[np.ndarray],
        adam: Mapping[str, float],
        segments: Optional[np.ndarray],
    ) -> None:
        spec = _spec(name)
        self.name, self.num_tasks, self.space, self.seed = name, num_tasks, space, seed
        self.family: str = spec["family"]
        self.samples: int = spec["samples"]
        self.hyper = dict(hyper)
        self.fixed = fixed
        self.adam = dict(adam)
        self.segments = segments
        self._core: Optional[Any] = None
        if segments is not None:
            self.bind(int(segments.sum()))  # checks the settings now

    def bind(self, dim: int) -> None:
        """Build the core balancer for gradients of length ``dim``.

        Parameters
        ----------
        dim : int
            The gradient length ``P`` (the Jacobian's columns).

        Raises
        ------
        TypeError
            When the core object is built and a numeric hyperparameter is a bool or not a
            number.
        ValueError
            When the balancer is already built for another length, or, building it, a
            hyperparameter is not one of its choices, not whole where an integer is expected,
            or out of its range.

        Notes
        -----
        The core object is built once; later calls only check that ``dim`` is the same.
        """
        if self._core is not None:
            if self._core.info["dim"] != dim:
                raise ValueError(
                    f"jacobian: expected {self._core.info['dim']} columns (this balancer's "
                    f"gradient length), got {dim}"
                )
            return
        spec = _SPECS[self.name]
        self._core = _core.Balancer(
            name=self.name,
            num_tasks=self.num_tasks,
            dim=int(dim),
            seed=self.seed,
            hyper=tuple(_encode(self.name, h, self.hyper[h["name"]]) for h in spec["hyper"]),
            adam=tuple(float(self.adam[k]) for k in _ADAM),
            fixed=self.fixed,
            segments=self.segments,
        )

    def prepare(self, model: Any) -> Any:
        """Bind to ``model`` for training and return the core balancer.

        In the ``"parameters"`` space it binds to the model's shared parameters
        (:meth:`rmtl.models.Backbone.shared_parameters`; their tensor lengths become
        ``segments`` unless :func:`create` was given them), in the ``"representation"``
        space to the width of the towers' input (``bottom_dims[-1]``).

        Parameters
        ----------
        model : rmtl.models.Backbone
            The backbone to train, with this balancer's number of tasks.

        Returns
        -------
        rmtl._core.Balancer
            The core object, which :meth:`rmtl.models.Backbone.train_chunk` passes to C.

        Raises
        ------
        ValueError
            When the model's tasks share nothing (SingleTask), it has another task count,
            or the balancer is already bound to another gradient length.
        """
        names = model.shared_parameters()
        if not names:
            raise ValueError(
                f"balancer: {type(model).__name__} shares no parameters between its tasks, so "
                "there is nothing to balance; use a multi-task backbone (sharedbottom, esmm, "
                "omoe, mmoe, ple, ple_paper, aitm)"
            )
        if model.config.num_tasks != self.num_tasks:
            raise ValueError(
                f"balancer: made for {self.num_tasks} tasks, the model has {model.config.num_tasks}"
            )
        if self.space == "representation":
            self.bind(int(model.config.bottom_dims[-1]))
            return self._core
        _, lengths = model._shared_spans()
        if self._core is None and self.segments is None:
            self.segments = lengths
        self.bind(int(lengths.sum()))
        return self._core

    def step(self, losses: Any, jacobian: Any, rows: float = 1.0) -> np.ndarray:
        """The direction of one training step, advancing the balancer's state.

        Parameters
        ----------
        losses : array (K,) or (S, K)
            The task losses (``(S, K)``: one row per batch for a balancer with ``samples``
            S > 1).
        jacobian : array (K, P) or (S, K, P)
            Their gradients with respect to the shared parameters (or the representation).
            The first call binds the balancer to ``P`` (:meth:`bind`).
        rows : float
            The batch size, which weights the losses in the epoch means that DWA, GradNorm
            and STCH read.

        Returns
        -------
        float32 array (P,)
            The direction to apply to the shared parameters (LibMTL's scale: that of
            ``sum_k w_k L_k``).

        Raises
        ------
        ValueError
            When a shape is wrong, ``P`` differs from the bound length, or a loss or gradient
            is NaN or infinite (the state is then unchanged).
        """
        S, K = self.samples, self.num_tasks
        lo = (
            np.ascontiguousarray(losses, np.float32).reshape(S, K)
            if np.size(losses) == S * K
            else None
        )
        if lo is None:
            raise ValueError(
                f"losses: expected {S * K} values ({S} x {K}), got shape {np.shape(losses)}"
            )
        jac = np.ascontiguousarray(jacobian, np.float32)
        if jac.ndim == 2 and S == 1:
            jac = jac[None]
        if jac.ndim != 3 or jac.shape[:2] != (S, K):
            want = f"({K}, P)" if S == 1 else f"({S}, {K}, P)"
            raise ValueError(f"jacobian: expected shape {want}, got {jac.shape}")
        self.bind(jac.shape[2])
        out = np.empty(jac.shape[2], np.float32)
        self._core.step(losses=lo, jacobian=jac, out=out, rows=float(rows))
        return out

    def step_weights(self, losses: Any, rows: float = 1.0) -> np.ndarray:
        """A ``"losses"`` balancer's task weights of one training step, advancing its
        state as :meth:`step` would (its direction is ``sum_k w_k g_k``).

        Parameters
        ----------
        losses : array (K,)
            The task losses.
        rows : float
            The batch size, as for :meth:`step`.

        Returns
        -------
        float64 array (K,)
            The task weights ``w_k``.

        Raises
        ------
        RuntimeError
            Before the core object is built (call :meth:`bind` or :meth:`step` first).
        """
        if self._core is None:
            raise RuntimeError("step_weights: call bind(dim) or step() first")
        return self._core.step_weights(np.ascontiguousarray(losses, np.float32), float(rows))

    def after_step(self, losses: Any) -> None:
        """Report the step's batch losses at the updated parameters.

        FAMO reads them; the others ignore them, as does a balancer not yet built.

        Parameters
        ----------
        losses : array (K,)
            The task losses of the step's batch, evaluated after the step.
        """
        if self._core is not None:
            self._core.after_step(np.ascontiguousarray(losses, np.float32))

    def end_epoch(self) -> None:
        """An epoch of training ended: its mean losses join the history (DWA, GradNorm and
        STCH read it)."""
        if self._core is not None:
            self._core.end_epoch()

    @property
    def weights(self) -> Optional[np.ndarray]:
        """The last step's task weights ``(K,)`` float64, or None (before the core object
        is built, or for a method without task weights)."""
        return None if self._core is None else self._core.weights

    @property
    def steps(self) -> int:
        """The number of steps taken (0 before the core object is built)."""
        return 0 if self._core is None else self._core.info["steps"]

    def state_dict(self) -> dict[str, Any]:
        """Settings and state, for checkpoints.

        Returns
        -------
        dict
            ``settings`` (:meth:`settings`), ``dim`` (the bound gradient length, or None
            before binding) and ``state`` (the core's state, or None). :meth:`load_state_dict`
            of a balancer made with the same settings continues bit for bit.
        """
        state = None if self._core is None else self._core.get_state()
        return {
            "settings": self.settings(),
            "dim": None if self._core is None else self._core.info["dim"],
            "state": state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state : mapping
            A :meth:`state_dict` of a balancer with the same settings. With ``dim`` None
            (saved before binding) nothing is restored.

        Raises
        ------
        ValueError
            When it was saved from a balancer with other settings, or this one is bound to
            another gradient length.
        """
        if dict(state["settings"]) != self.settings():
            raise ValueError(
                f"state: saved from a balancer with settings {dict(state['settings'])}, "
                f"this one has {self.settings()}"
            )
        if state["dim"] is not None:
            self.bind(int(state["dim"]))
            self._core.set_state(dict(state["state"]))

    def settings(self) -> dict[str, Any]:
        """What :func:`create` was given, defaults filled in.

        Returns
        -------
        dict
            JSON-ready: ``name``, ``num_tasks``, ``space``, ``seed``, ``hyper``, ``weights``
            (``linear``'s fixed weights or None) and the Adam settings ``lr``, ``beta1``,
            ``beta2``, ``eps``, ``weight_decay``.
        """
        return {
            "name": self.name,
            "num_tasks": self.num_tasks,
            "space": self.space,
            "seed": self.seed,
            "hyper": dict(self.hyper),
            "weights": None if self.fixed is None else [float(x) for x in self.fixed],
            **{k: float(v) for k, v in self.adam.items()},
        }

    def __repr__(self) -> str:
        hyper = "".join(f", {k}={v!r}" for k, v in self.hyper.items())
        return (
            f"rmtl.balancers.create({self.name!r}, num_tasks={self.num_tasks}, "
            f"space={self.space!r}, seed={self.seed}{hyper})"
        )


def create(
    name: str,
    num_tasks: int,
    space: str = "parameters",
    seed: int = 0,
    *,
    weights: Optional[Sequence[float]] = None,
    segments: Optional[Sequence[int]] = None,
    lr: float = _ADAM["lr"],
    weight_decay: float = _ADAM["weight_decay"],
    **hyper: Any,
) -> Balancer:
    """Balancer ``name`` over ``num_tasks`` tasks.

    Parameters
    ----------
    name : str
        The method (:func:`names`).
    num_tasks : int
        The number of tasks to balance, 2 to ``rmtl._core.max_tasks``.
    space : str
        Where training takes the gradients (:data:`SPACES`): ``"parameters"`` (the
        default) or ``"representation"`` (only the methods of
        :func:`representation_names`).
    seed : int
        Drives the methods that draw random numbers (``rlw``, ``graddrop``, ``pcgrad``'s
        task order, ...) from the counter-based generator, so the same seed gives the same
        bits on any thread count.
    weights : sequence of float, optional
        ``linear``'s fixed task weights, finite and >= 0 (default all 1); refused by the
        other methods.
    segments : sequence of int, optional
        The lengths of the parameter tensors the gradient concatenates (methods that work
        per tensor, such as ``metabalance``, read them; default one tensor, or the model's
        shared tensors when :meth:`Balancer.prepare` binds it).
    lr, weight_decay : float
        Adam's settings for the balancers with trainable parameters (``uw``,
        ``gradnorm``), as LibMTL trains them with the model's optimizer
        (:class:`rmtl.Trainer` passes its own).
    **hyper
        The method's hyperparameters (:func:`hyperparameters`); the ones left out take
        their defaults.

    Returns
    -------
    Balancer

    Raises
    ------
    TypeError, ValueError
        When a name, type or range is wrong, naming the argument and what is allowed.
    """
    spec = _spec(name)
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)):
        raise TypeError(f"num_tasks: expected an integer, got {num_tasks!r}")
    if not 2 <= num_tasks <= _core.max_tasks:
        raise ValueError(
            f"num_tasks: expected 2 to {_core.max_tasks} tasks to balance, got {num_tasks}"
        )
    if space not in SPACES:
        raise ValueError(f"space: expected one of {list(SPACES)}, got {space!r}")
    if space == "representation" and not spec["representation"]:
        raise ValueError(
            f"space: {name} cannot work on the representation the towers read (LibMTL "
            f"refuses it too); use space='parameters', or one of {representation_names()}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an integer, got {seed!r}")
    known = [h["name"] for h in spec["hyper"]]
    unknown = sorted(set(hyper) - set(known))
    if unknown:
        raise TypeError(f"{unknown[0]}: not a hyperparameter of {name}; expected {known or 'none'}")
    filled = {h["name"]: hyper.get(h["name"], _default(h)) for h in spec["hyper"]}
    fixed = None
    if weights is not None:
        if name != "linear":
            raise TypeError(f"weights: only linear takes fixed task weights, not {name}")
        fixed = np.asarray(weights, dtype=np.float32)
        if fixed.shape != (num_tasks,):
            raise ValueError(f"weights: expected {num_tasks} task weights, got shape {fixed.shape}")
        if not np.isfinite(fixed).all() or (fixed < 0).any():
            raise ValueError(f"weights: expected finite non-negative weights, got {list(weights)}")
    seg = None if segments is None else np.asarray(segments, dtype=np.int64)
    adam = {**_ADAM, "lr": lr, "weight_decay": weight_decay}
    b = Balancer(name, int(num_tasks), space, int(seed), filled, fixed, adam, seg)
    if b._core is None:
        b_check = Balancer(name, int(num_tasks), space, int(seed), filled, fixed, adam, None)
        b_check.bind(1)  # the core checks every hyperparameter's range now, not at the first step
    return b
