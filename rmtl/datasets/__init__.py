"""Session datasets: the synthetic generator with known truth, and loaders and writers for
the raw RetailRocket and KuaiRand files (each loader's docstring gives its recipe; reading
and writing raw files needs pyarrow: ``pip install 'rmtl[data]'``)."""

from ._csv import DataFormatError
from .kuairand import load_kuairand, read_user_features, read_video_features, write_kuairand
from .retailrocket import load_retailrocket, write_retailrocket
from .synth import PRESETS, FieldSpec, SyntheticConfig, synthetic

__all__ = [
    "synthetic",
    "SyntheticConfig",
    "FieldSpec",
    "PRESETS",
    "load_retailrocket",
    "write_retailrocket",
    "load_kuairand",
    "write_kuairand",
    "read_user_features",
    "read_video_features",
    "DataFormatError",
]
