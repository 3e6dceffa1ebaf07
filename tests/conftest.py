"""Shared fixtures: small simulated files and one small trained model, made once per test session."""

from pathlib import Path

import pytest

from lhcbpid.simulate import write_simulated

#: Small enough for seconds of training, large enough for every class to be learnt a little.
TRAIN_ROWS = 6000
QUICK_EPOCHS = 3


@pytest.fixture(scope="session")
def simulated_training(tmp_path_factory) -> Path:
    """A simulated training.csv.gz in the real column order."""
    path = tmp_path_factory.mktemp("data") / "training.csv.gz"
    write_simulated(path, rows=TRAIN_ROWS, seed=11, kind="training")
    return path


@pytest.fixture(scope="session")
def simulated_test(tmp_path_factory) -> Path:
    """A simulated test.csv.gz (features, then ID last) with its labels side file."""
    path = tmp_path_factory.mktemp("data") / "test.csv.gz"
    write_simulated(path, rows=3000, seed=12, kind="test")
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, simulated_training) -> Path:
    """The output directory of one quick `lhcbpid train` run on simulated data."""
    from lhcbpid.cli import main

    out = tmp_path_factory.mktemp("trained")
    assert main(["train", "--data", str(simulated_training), "--out", str(out),
                 "--epochs", str(QUICK_EPOCHS), "--seed", "5"]) == 0
    return out
