"""Wall time and peak memory of `lhcbpid train` with the shipped configuration (targets: < 10 min, < 4 GB).

Usage: python benchmarks/train_speed.py [--data FILE] [--rows N]
Without --data it simulates N rows (default 1,200,000) first; the figures are then for simulated data.
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

from lhcbpid.simulate import write_simulated


def main() -> None:
    """Run one training in a child process and print its wall time, peak RSS and test figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=1_200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "training.csv.gz"
            write_simulated(data, rows=args.rows, seed=7, kind="training")  # in this process: not in the peak
        out = Path(tmp) / "out"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lhcbpid.cli", "train", "--data", str(data), "--out", str(out)],
                       check=True)
        wall = time.perf_counter() - started
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        metrics = json.loads((out / "metrics.json").read_text())
    print(f"data: {data} ({metrics['source']})")
    print(f"train wall time {wall:.0f} s (fit {metrics['timings']['fit_seconds']:.0f} s, "
          f"{metrics['timings']['epochs']} epochs); peak memory {peak_gb:.2f} GB")
    print(f"test log loss {metrics['test']['log_loss']:.4f}; AUC "
          + ", ".join(f"{c} {a:.4f}" for c, a in metrics["test"]["test_auc"].items()))


if __name__ == "__main__":
    main()
