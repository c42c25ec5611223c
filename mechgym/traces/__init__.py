"""Recorded play: the :class:`TraceDataset` container, its Parquet / npz files and the recording wrapper."""

from mechgym.errors import TraceFileError
from mechgym.traces.dataset import SCHEMA_VERSION, TraceDataset, TraceMetadata
from mechgym.traces.io import load_npz, load_parquet, load_traces, save_npz, save_parquet, save_traces
from mechgym.traces.recorder import RecordTraces

__all__ = [
    "SCHEMA_VERSION",
    "RecordTraces",
    "TraceDataset",
    "TraceFileError",
    "TraceMetadata",
    "load_npz",
    "load_parquet",
    "load_traces",
    "save_npz",
    "save_parquet",
    "save_traces",
]
