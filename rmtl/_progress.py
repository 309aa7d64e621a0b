"""Progress bars and per-epoch lines. tqdm.auto (notebook widgets in Jupyter) is imported
only when something is shown: importing it in a kernel without ipywidgets warns even when
every bar is disabled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def bar(show: bool, **kwargs: Any) -> Any:
    """A tqdm bar, or a disabled one that imports nothing for Jupyter."""
    if show:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(disable=not show, **kwargs)


def log_record(show: bool, record: Mapping[str, Any]) -> None:
    """Print an epoch record as ``key=value`` pairs above any running bar."""
    if show:
        from tqdm.auto import tqdm

        tqdm.write(
            " ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
            )
        )
