"""Progress bars and per-epoch lines. tqdm.auto (notebook widgets in Jupyter) is imported
only when something is shown: importing it in a kernel without ipywidgets warns even when
every bar is disabled. Per-epoch lines are log records of the ``rmtl`` logger hierarchy,
never prints: nothing shows unless the user configures logging (the package logger has a
NullHandler)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any


def bar(show: bool, **kwargs: Any) -> Any:
    """A tqdm bar, or a disabled one that imports nothing for Jupyter."""
    if show:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(disable=not show, **kwargs)


def format_record(record: Mapping[str, Any]) -> str:
    """An epoch record as ``key=value`` pairs (floats to 4 decimals)."""
    return " ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
    )


def log_record(show: bool, record: Mapping[str, Any], logger: logging.Logger) -> None:
    """Log an epoch record as ``key=value`` pairs: at INFO when progress is shown, at DEBUG
    otherwise (silent jobs of a pool or a Tune trial stay quiet at INFO). The record itself
    rides along as ``extra={"record": ...}`` for handlers that want the numbers."""
    level = logging.INFO if show else logging.DEBUG
    if logger.isEnabledFor(level):
        logger.log(level, "%s", format_record(record), extra={"record": dict(record)})
