"""An agent's checkpoint directory: which run it belongs to (configuration and data
fingerprints, checked on every use) and the finished stages, each committed as one file
written atomically, so a kill at any moment leaves either the old state or the new one."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from ._io import CorruptFileError, open_npz, save_npz, write_json
from .critic import Critic
from .data import SessionData
from .models import _build_saved

__all__ = ["Checkpoint", "fingerprint"]

_FORMAT = 2
_MANIFEST = "agent.json"
_DATA = "data"  # a stage file's document: {role: fingerprint} of the data it was trained on


def fingerprint(data: SessionData) -> str:
    """A SHA-256 digest of everything in ``data`` that training reads (ids, times, codes,
    features, labels, field sizes, task names and the critics' state layout)."""
    h = hashlib.sha256(json.dumps([list(data.field_dims), list(data.task_names)]).encode())
    arrays = [data.session, data.time, data.sparse, data.dense, data.labels]
    if data.backbone_only or data.critic_only is not None:  # session context: the critics' state
        h.update(f"context {data.backbone_only}".encode())
        arrays += [] if data.critic_only is None else [data.critic_only]
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


class Checkpoint:
    """The directory ``directory`` of one agent's run.

    ``agent.json`` holds the run's identity: ``identity`` (the agent's and the backbone's
    configuration) given here and the data fingerprints recorded by :meth:`check_data`. Any
    later use with another identity or other data raises ValueError, so a resume never
    returns models of another run. Every stage result is one file (:meth:`save_net`,
    :meth:`save_nets`, :meth:`save_replay`) holding the weights, optimizer state and the
    stage's history, and the fingerprints of the data the stage was trained on (those
    recorded when it was written). Loading a stage file whose fingerprints differ from this
    run's data (a file copied from another run's directory, or left beside a rewritten
    ``agent.json``) raises ValueError naming it. A stage file without fingerprints, written
    before they were recorded, is accepted with a warning naming it: ``agent.json``'s
    fingerprints, checked on every use, still vouch for its directory.
    """

    def __init__(self, directory: str | os.PathLike[str], identity: Mapping[str, Any]) -> None:
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        mine = json.loads(
            json.dumps(dict(identity))
        )  # tuples as lists, as they come back from the file
        path = self.path(_MANIFEST)
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    theirs = json.load(f)
            except (OSError, ValueError) as e:
                raise CorruptFileError(path, f"unreadable checkpoint manifest ({e})") from None
            if theirs.get("format") != _FORMAT or {k: theirs.get(k) for k in mine} != mine:
                raise ValueError(
                    f"checkpoint_dir: {self.directory} holds a run with another configuration; "
                    "use a new directory or the same settings"
                )
            self.data: dict[str, str] = dict(theirs.get("data", {}))
        else:
            self.data = {}
        self._identity = mine
        if not os.path.exists(path):
            self._write_manifest()

    def path(self, name: str) -> str:
        """The path of the checkpoint file ``name`` in this directory."""
        return os.path.join(self.directory, name)

    def has(self, name: str) -> bool:
        """Whether the checkpoint file ``name`` was committed."""
        return os.path.exists(self.path(name))

    def check_data(self, **parts: SessionData) -> None:
        """Record the fingerprint of each named data set on first use; raise ValueError when
        one differs from the recorded one (resuming with other data)."""
        new = False
        for role, data in parts.items():
            digest = fingerprint(data)
            if role not in self.data:
                self.data[role], new = digest, True
            elif self.data[role] != digest:
                raise ValueError(
                    f"{role}: differs from the {role} data of the run in checkpoint_dir "
                    f"{self.directory}; resume with the same data or use a new directory"
                )
        if new:
            self._write_manifest()

    def _write_manifest(self) -> None:
        write_json(self.path(_MANIFEST), {"format": _FORMAT, **self._identity, "data": self.data})

    # ------------------------------------------------------------------ stage files
    def _trained_on(self, z: Any) -> None:
        """Refuse the open stage file ``z`` when the data fingerprints it records differ from
        this run's (ValueError naming it); warn when it records none (an older file)."""
        if _DATA not in z:
            warnings.warn(
                f"{z.path}: records no fingerprint of the data it was trained on (written by an "
                f"older rmtl); resuming from it because {_MANIFEST}'s fingerprints match this "
                "data; delete it to train its stage again",
                UserWarning,
                stacklevel=4,
            )
            return
        theirs = z.json(_DATA)
        if not isinstance(theirs, dict):
            raise CorruptFileError(z.path, f"not an rmtl checkpoint file ({_DATA!r} not a mapping)")
        differ = sorted(r for r in theirs if r in self.data and theirs[r] != self.data[r])
        if differ:
            raise ValueError(
                f"{z.path}: trained on other {' and '.join(differ)} data than this run's "
                f"(data fingerprints differ); delete the file, or use a fresh checkpoint "
                "directory (rmtl run: a fresh --resume or --out directory), to train it again"
            )

    def save_net(self, name: str, net: Any, history: Any) -> None:
        """One backbone (a file :func:`rmtl.load` reads), its stage's history and the data
        fingerprints, atomically."""
        net._save(self.path(name), "config", {"history": history, _DATA: self.data})

    def load_net(self, name: str, build: Callable[..., Any]) -> tuple[Any, Any]:
        """(backbone, history) of a file :meth:`save_net` wrote from this run's data;
        ``build(**config)`` makes the backbone (weights and optimizer state are then restored,
        evaluation mode)."""
        with open_npz(self.path(name), "checkpoint") as z:
            self._trained_on(z)
            return _build_saved(build, z.json("config"), z), z.json("history")

    def save_replay(self, name: str, buffer: Any) -> None:
        """A replay buffer (a file :meth:`rmtl.ReplayBuffer.load` reads) and the data
        fingerprints, atomically."""
        buffer.save(self.path(name), {_DATA: self.data})

    def load_replay(self, name: str, load: Callable[[str], Any]) -> Any:
        """The replay buffer of a file :meth:`save_replay` wrote from this run's data;
        ``load(path)`` reads it (:meth:`rmtl.ReplayBuffer.load`; passed in so that checkpoints
        stay below the replay buffer in the import graph)."""
        with open_npz(self.path(name), "checkpoint") as z:
            self._trained_on(z)
        return load(self.path(name))

    def save_nets(self, name: str, nets: Mapping[str, Any], state: Any) -> None:
        """Several networks and a JSON ``state`` in one file, atomically (stage 2's epochs)."""
        arrays: dict[str, np.ndarray] = {}
        configs = {}
        for role, net in nets.items():
            arrays.update({f"{role}.{k}": v for k, v in net._arrays().items()})
            configs[role] = {"key": _config_key(net), "config": net.config.to_dict()}
        save_npz(self.path(name), arrays, {"state": state, "nets": configs, _DATA: self.data})

    def load_nets(
        self, name: str, build: Mapping[str, Callable[..., Any]]
    ) -> tuple[dict[str, Any], Any]:
        """({role: network}, state) of a file :meth:`save_nets` wrote from this run's data;
        ``build[config key]`` makes each network."""
        with open_npz(self.path(name), "checkpoint") as z:
            self._trained_on(z)
            nets = {}
            for role, spec in z.json("nets").items():
                nets[role] = _build_saved(
                    build[spec["key"]], spec["config"], _Prefixed(z, role + ".")
                )
            return nets, z.json("state")


def _config_key(net: Any) -> str:
    return "critic_config" if isinstance(net, Critic) else "config"


class _Prefixed:
    """The members of an open file under ``prefix``, by their short names."""

    def __init__(self, z: Any, prefix: str) -> None:
        self._z, self._prefix = z, prefix

    def __getitem__(self, key: str) -> np.ndarray:
        return self._z[self._prefix + key]

    def __contains__(self, key: str) -> bool:
        return self._prefix + key in self._z

    def json(self, key: str) -> Any:
        """A JSON document stored as uint8 bytes."""
        return self._z.json(self._prefix + key)
