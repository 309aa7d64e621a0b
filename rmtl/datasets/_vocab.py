"""Categorical coding shared by the loaders: values -> codes by descending frequency, with
0 kept for unknown or missing values, and the session split on time gaps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import numpy as np

from ._csv import pyarrow

Vocab = dict[str, int]


def build_vocab(values, tail: Optional[float] = None) -> Vocab:
    """Codes 1, 2, ... for the non-null values of a string array, most frequent first (ties by
    value). With ``tail``, every value from the first one whose cumulative frequency exceeds
    ``tail`` (a fraction of all rows, nulls included) on shares one code, as the authors'
    Catemapper does for the long-tail columns."""
    pa = pyarrow()
    counts = pa.compute.value_counts(values.drop_null())
    vals = np.asarray(counts.field("values").to_pylist(), dtype=object)
    cnt = counts.field("counts").to_numpy()
    if vals.size == 0:
        return {}
    order = np.lexsort((vals.astype(str), -cnt))
    vals, cnt = vals[order], cnt[order]
    codes = np.arange(1, vals.size + 1)
    if tail is not None:
        over = np.flatnonzero(np.cumsum(cnt) / len(values) > tail)
        if over.size:
            codes[over[0] :] = codes[over[0]]
    return {str(v): int(c) for v, c in zip(vals, codes)}


def apply_vocab(values, vocab: Mapping[str, int]) -> np.ndarray:
    """int32 codes of a string array: vocab[value], 0 for nulls and unseen values."""
    pa = pyarrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    enc = pa.compute.dictionary_encode(values)
    lut = np.array([vocab.get(v, 0) for v in enc.dictionary.to_pylist()] + [0], dtype=np.int32)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    idx = np.where(enc.indices.is_null().to_numpy(zero_copy_only=False), len(lut) - 1, idx)
    return lut[idx.astype(np.int64)]


def field_dim(vocab: Mapping[str, int]) -> int:
    """Cardinality of a coded field: the largest code + 1 (code 0 = unknown)."""
    return max(vocab.values(), default=0) + 1


def split_sessions(user: np.ndarray, time: np.ndarray, gap_ms: int) -> np.ndarray:
    """Session ids 0, 1, ... for rows sorted by (user, time): a new session starts with a new
    user or after a gap of more than gap_ms."""
    new = np.ones(len(user), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (np.diff(time) > gap_ms)
    return np.cumsum(new) - 1
