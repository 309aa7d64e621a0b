"""The reference hyperparameters of RMTL in one place (:class:`RMTLConfig`, whose defaults
:class:`rmtl.RMTL` and :class:`rmtl.Trainer` use) and one range check per parameter
(:data:`RANGES`), so every entry point rejects a bad value the same way, naming it."""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any, Optional

from . import _core, balancers

__all__ = [
    "RMTLConfig",
    "Range",
    "RANGES",
    "CHOICES",
    "WEIGHTINGS",
    "CRITIC_FREE",
    "AUTHORS",
    "COUNT",
    "check",
]

# stage-3 weightings: the core's, and the control "continued" (every weight one: the plain
# supervised step, no critics)
WEIGHTINGS: tuple[str, ...] = (*_core.enums["weighting"], "continued")
CRITIC_FREE = ("constant", "continued", "static")
# compat="authors": the authors' code's behaviour where rmtl deliberately differs
AUTHORS: dict[str, Any] = {
    "batch_order": "time",
    "stage3_critic_mode": "train",
    "reward": "bce_wrapped",
    "critic_output_bias": None,
    "early_stopping": "auc",
}
CHOICES: dict[str, tuple[Any, ...]] = {
    "behaviour": ("uniform", "actor"),
    "target": ("td3", "ddpg"),
    "weighting": WEIGHTINGS,
    "reward": tuple(_core.enums["reward"]),
    "init_output_bias": (None, "prior"),
    "batch_order": ("shuffled", "time"),
    "stage3_critic_mode": ("eval", "train"),
    "early_stopping": ("logloss", "auc"),
    "balancer": (None, *balancers.names()),
}


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of one parameter: finite numbers from ``low`` to ``high`` (excluded with
    ``open_low`` / ``open_high``), integers only with ``integer``.

    Parameters
    ----------
    low : float
        The lower bound.
    high : float, default inf
        The upper bound (infinite: no upper bound).
    open_low, open_high : bool, default False
        Whether ``low`` (``high``) itself is excluded.
    integer : bool, default False
        Whether only integers are allowed.
    """

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    integer: bool = False

    def check(self, name: str, value: Any) -> Any:
        """Check a value against this range.

        Parameters
        ----------
        name : str
            The parameter's name, for the error message.
        value : number
            The value.

        Returns
        -------
        int or float
            ``value`` as int (``integer``) or float.

        Raises
        ------
        TypeError
            When ``value`` is a bool or not a number (not an integer, with ``integer``),
            naming ``name``.
        ValueError
            When ``value`` is outside the range, or (without ``integer``) NaN or infinite,
            naming ``name`` and the range.
        """
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            raise TypeError(
                f"{name}: expected {'an integer' if self.integer else 'a number'}, got {value!r}"
            )
        v = int(value) if self.integer else float(value)
        inside = (v > self.low if self.open_low else v >= self.low) and (
            v < self.high if self.open_high else v <= self.high
        )
        if not (inside and (self.integer or math.isfinite(v))):  # an int of any size is finite
            if math.isinf(self.low) and math.isinf(self.high):  # no bounds: NaN or infinite
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
            lo = "(" if self.open_low else "["
            top = int(self.high) if self.integer and math.isfinite(self.high) else self.high
            hi = f"{top:g}" if isinstance(top, float) else str(top)
            hi += ")" if self.open_high or not math.isfinite(self.high) else "]"
            raise ValueError(
                f"{name}: expected a finite {'integer' if self.integer else 'value'} in "
                f"{lo}{self.low:g}, {hi}, got {value!r}"
            )
        return v


POSITIVE, NON_NEGATIVE = Range(0.0, open_low=True), Range(0.0)
COUNT, NON_NEGATIVE_COUNT = Range(1, integer=True), Range(0, integer=True)
PROBABILITY = Range(0.0, 1.0)

# the most optimizer steps a step floor may ask for: days of training at the smallest sizes
# (a larger floor is a typo, and would train for ever)
MOST_STEPS = 10**8

RANGES: dict[str, Range] = {
    "gamma": PROBABILITY,
    "tau": PROBABILITY,
    "lam": NON_NEGATIVE,
    "critic_lr": POSITIVE,
    "behaviour_noise": NON_NEGATIVE,
    "seed": Range(-math.inf, integer=True),
    "critic_dropout": Range(0.0, 1.0, open_high=True),
    "critic_output_bias": Range(-math.inf),
    "critic_epochs": COUNT,
    "critic_batch_size": COUNT,
    "buffer_capacity": COUNT,
    "soft_update_freq": COUNT,
    "target_noise": NON_NEGATIVE,
    "target_noise_clip": NON_NEGATIVE,
    "actor_lr": POSITIVE,
    "actor_update_freq": COUNT,
    "init_training_step": NON_NEGATIVE_COUNT,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "batch_size": COUNT,
    "epochs": COUNT,
    "patience": COUNT,
    "beta1": Range(0.0, 1.0, open_high=True),
    "beta2": Range(0.0, 1.0, open_high=True),
    "eps": POSITIVE,
    "chunk_seconds": POSITIVE,
    "min_steps": Range(0, MOST_STEPS, integer=True),
    "finetune_epochs": COUNT,
}  # critic_output_bias: any finite number (or None); finetune_epochs: or None (= epochs)


def check(name: str, value: Any) -> Any:
    """Check one parameter against :data:`RANGES`.

    Parameters
    ----------
    name : str
        A key of :data:`RANGES`.
    value : number
        The value.

    Returns
    -------
    int or float
        The value, normalised; ValueError or TypeError naming it when it is out of range.
    """
    return RANGES[name].check(name, value)


@dataclasses.dataclass(frozen=True)
class RMTLConfig:
    """Every knob of the three stages with its reference value.

    A frozen dataclass: construction checks every value (ValueError or TypeError naming it),
    :meth:`replace` makes a checked copy. :class:`rmtl.RMTL` documents each parameter's
    meaning and source (the paper, the authors' code or rmtl).

    Parameters
    ----------
    gamma, tau, lam, critic_lr : float
        Discount (0.9), target soft-update rate (0.2), the ``lam`` of ``w = 1 - lam Q``
        (0.7) and the critics' learning rate (1e-3).
    behaviour : "uniform" or "actor"
        Stage-2 behaviour policy; ``behaviour_noise`` (0.1) is the actor's noise std.
    behaviour_noise : float
        See ``behaviour``.
    target : "td3" or "ddpg"
        TD target; ``target_noise`` (0.4) and ``target_noise_clip`` (3e-3) shape TD3's
        target action noise.
    target_noise, target_noise_clip : float
        See ``target``.
    ips : bool
        Inverse propensity weights in the TD loss (False).
    weighting : str
        Stage-3 loss weights: ``rmtl`` (default) or an ablation or control (see
        :class:`rmtl.RMTL`).
    seed : int
        Batch order, critic initialisation, replay sampling and target noise.
    reward : "bce", "abs" or "bce_wrapped"
        Per-task reward of the session MDP.
    critic_bottom_dims, critic_tower_dims : tuple of int
        The critics' MLP widths, (512, 256) and (128, 64).
    critic_dropout : float
        0.2.
    critic_output_bias : float or None
        The critics' initial output bias, 1.0 (None: PyTorch's default initialisation).
    critic_epochs, critic_batch_size, buffer_capacity, soft_update_freq : int
        Stage 2: 96 passes over the replay buffer, batches of 2048, 500,000 transitions,
        a target update every 2 critic steps.
    actor_update : bool
        Apply the paper's actor loss (False); ``actor_lr`` (1e-3), ``actor_update_freq``
        (1) and ``init_training_step`` (1000) set it.
    actor_lr : float
        See ``actor_update``.
    actor_update_freq, init_training_step : int
        See ``actor_update``.
    lr, weight_decay : float
        Stages 1 and 3: Adam's learning rate (1e-3) and weight decay (1e-6).
    batch_size, epochs, patience, min_steps : int
        Stages 1 and 3: batch 2048, at most 100 epochs, early stopping patience 2, at least
        ``min_steps`` Adam steps in stage 1 (0: off).
    finetune_epochs : int or None
        Stage 3's most epochs (None: ``epochs``).
    early_stopping : "logloss" or "auc"
        The validation score early stopping follows.
    init_output_bias : None or "prior"
        Start the output biases at the training label rates' logits.
    batch_order : "shuffled" or "time"
        Row order of stages 1 and 3.
    stage3_critic_mode : "eval" or "train"
        The critics' mode when stage 3 computes ``Q``.
    balancer : str or None
        A loss balancer of :func:`rmtl.balancers.names` for stages 1 and 3 (None: none).
    balancer_args : mapping
        Its hyperparameters (checked by :func:`rmtl.balancers.create`).

    Raises
    ------
    TypeError
        Naming the field: a number that is a bool or not a number (not an integer for the
        integer fields, such as ``seed`` or ``epochs``); ``ips`` or ``actor_update`` not True
        or False; a ``critic_bottom_dims`` or ``critic_tower_dims`` entry that is not an
        integer; ``balancer_args`` not a dict with string keys, naming something that is not
        a hyperparameter of ``balancer``, or giving a numeric hyperparameter a non-number.
    ValueError
        Naming the field: a value not one of its choices (``behaviour``, ``target``,
        ``weighting``, ``reward``, ``init_output_bias``, ``batch_order``,
        ``stage3_critic_mode``, ``early_stopping``, ``balancer``); a number outside its range
        (:data:`RANGES`), NaN or infinite; a ``critic_bottom_dims`` or ``critic_tower_dims``
        entry below 1; ``balancer_args`` given without a ``balancer``; or a balancer
        hyperparameter not one of its choices, not whole where an integer is expected, or out
        of its range.

    See Also
    --------
    RMTL.from_config : an agent from a ready config.

    Examples
    --------
    >>> import rmtl
    >>> config = rmtl.RMTLConfig(critic_epochs=4, lam=0.5)
    >>> config.replace(lam=1.0).lam
    1.0
    """

    gamma: float = 0.9
    tau: float = 0.2
    lam: float = 0.7
    critic_lr: float = 1e-3
    behaviour: str = "uniform"
    behaviour_noise: float = 0.1
    target: str = "td3"
    ips: bool = False
    weighting: str = "rmtl"
    seed: int = 0
    reward: str = "bce"
    critic_bottom_dims: tuple[int, ...] = (512, 256)
    critic_tower_dims: tuple[int, ...] = (128, 64)
    critic_dropout: float = 0.2
    critic_output_bias: Optional[float] = 1.0
    critic_epochs: int = 96
    critic_batch_size: int = 2048
    buffer_capacity: int = 500_000
    soft_update_freq: int = 2
    target_noise: float = 0.4
    target_noise_clip: float = 3e-3
    actor_update: bool = False
    actor_lr: float = 1e-3
    actor_update_freq: int = 1
    init_training_step: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 2048
    epochs: int = 100
    patience: int = 2
    min_steps: int = 0
    finetune_epochs: Optional[int] = None
    early_stopping: str = "logloss"
    init_output_bias: Optional[str] = None
    batch_order: str = "shuffled"
    stage3_critic_mode: str = "eval"
    balancer: Optional[str] = None
    balancer_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _CHECK_ORDER:
            object.__setattr__(self, name, _checked(name, getattr(self, name)))
        self._check_balancer()

    def _check_balancer(self) -> None:
        """``balancer_args`` are hyperparameters of ``balancer`` in range (checked by the
        core's table, as :func:`rmtl.balancers.create` checks them)."""
        if self.balancer_args and self.balancer is None:
            raise ValueError("balancer_args: given without a balancer; set balancer too")
        if self.balancer is not None:
            balancers.create(self.balancer, 2, **self.balancer_args)

    def make_balancer(self, num_tasks: int, seed: int) -> Optional[balancers.Balancer]:
        """The stages' loss balancer: ``balancer`` with ``balancer_args``, its parameters
        trained with this config's ``lr`` and ``weight_decay``.

        Parameters
        ----------
        num_tasks : int
            The number of tasks it balances.
        seed : int
            Its random state.

        Returns
        -------
        rmtl.balancers.Balancer or None
            None when the config has no ``balancer``.
        """
        if self.balancer is None:
            return None
        return balancers.create(
            self.balancer,
            num_tasks,
            seed=seed,
            lr=self.lr,
            weight_decay=self.weight_decay,
            **self.balancer_args,
        )

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], compat: Optional[str] = None) -> RMTLConfig:
        """The config of :class:`rmtl.RMTL`'s keyword arguments.

        Parameters
        ----------
        kwargs : mapping
            Field names and values; a name that is no field raises TypeError.
        compat : None or "authors"
            With ``"authors"`` the authors' switches (:data:`AUTHORS`) fill in what
            ``kwargs`` leaves out. ``compat`` itself is checked with the backbones it applies
            to (:func:`rmtl.models.check_compat`).

        Returns
        -------
        RMTLConfig

        Raises
        ------
        TypeError
            When a name in ``kwargs`` is no field, or a value has the wrong type (checked by
            the construction, as for :class:`RMTLConfig`; also a ``balancer_args`` name that
            is not a hyperparameter of ``balancer``).
        ValueError
            When a value is out of its range or not one of its choices, ``balancer_args``
            are given without a ``balancer``, or a balancer hyperparameter is out of its
            range (checked by the construction).
        """
        unknown = sorted(set(kwargs) - _FIELDS)
        if unknown:
            raise TypeError(
                f"unexpected keyword arguments {unknown}; see help(rmtl.RMTL) for the options"
            )
        return cls(**{**(AUTHORS if compat == "authors" else {}), **kwargs})

    def replace(self, **changes: Any) -> RMTLConfig:
        """A copy with some fields changed; only the changed values are checked (the others
        were when this config was built).

        Parameters
        ----------
        **changes
            Field names and their new values.

        Returns
        -------
        RMTLConfig

        Raises
        ------
        TypeError
            When a name in ``changes`` is no field, or a new value has the wrong type (also
            a ``balancer_args`` name that is not a hyperparameter of the balancer).
        ValueError
            When a new value is out of its range or not one of its choices, the copy would
            have ``balancer_args`` without a ``balancer``, or a balancer hyperparameter is
            out of its range.
        """
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise TypeError(f"unexpected fields {unknown}; expected fields of rmtl.RMTLConfig")
        new = copy.copy(self)
        for name, value in changes.items():
            object.__setattr__(new, name, _checked(name, value))
        if {"balancer", "balancer_args"} & set(changes):
            new._check_balancer()
        return new

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain dict.

        Returns
        -------
        dict
            Field name -> value, JSON-ready; ``RMTLConfig(**d)`` rebuilds the config.
        """
        return dataclasses.asdict(self)


_FIELDS = frozenset(f.name for f in dataclasses.fields(RMTLConfig))
_OPTIONAL = ("critic_output_bias", "finetune_epochs")  # the numbers that may be None
# the choices first, then every other field in declaration order
_CHECK_ORDER = (
    *CHOICES,
    *(f.name for f in dataclasses.fields(RMTLConfig) if f.name not in CHOICES),
)


def _checked(name: str, value: Any) -> Any:
    """One field of :class:`RMTLConfig`, checked (ValueError/TypeError naming it) and normalised
    (numbers as int or float, dimensions as a tuple of ints)."""
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ValueError(f"{name}: expected one of {list(CHOICES[name])}, got {value!r}")
    elif name in RANGES:
        return None if value is None and name in _OPTIONAL else check(name, value)
    elif name in ("critic_bottom_dims", "critic_tower_dims"):
        return tuple(COUNT.check(f"{name}[{i}]", d) for i, d in enumerate(tuple(value)))
    elif name in ("ips", "actor_update") and not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    elif name == "balancer_args":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise TypeError(f"{name}: expected a dict of hyperparameters, got {value!r}")
        return dict(value)
    return value
