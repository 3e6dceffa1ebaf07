"""Which data a number was measured on: the real LHCb release, or simulated/unverified data."""

from __future__ import annotations

from pathlib import Path

from lhcbpid.data import SIZES

REAL = "real LHCb data"
SIMULATED = "SIMULATED or unverified data, not the LHCb release"


def describe_source(path: Path) -> str:
    """REAL only for a file with the byte size of a released LHCb file; anything else is labelled simulated."""
    return REAL if Path(path).stat().st_size in SIZES.values() else SIMULATED
