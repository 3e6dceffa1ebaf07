"""Time to simulate and write 1.2M training rows to csv.gz (target: under 30 s)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from lhcbpid.simulate import simulate, write_simulated


def main(rows: int = 1_200_000) -> None:
    """Print simulate-only time and simulate+write time for csv.gz."""
    start = time.perf_counter()
    simulate(rows, seed=42)
    generated = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training.csv.gz"
        start = time.perf_counter()
        write_simulated(path, rows=rows, seed=42, kind="training")
        total = time.perf_counter() - start
        size = path.stat().st_size
    print(f"rows {rows:,}: simulate {generated:.1f} s; simulate + write csv.gz {total:.1f} s; {size / 1e6:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_200_000)
