"""The in-graph preprocessing on hand-made rows: -999 handling, signed logs, derived physics inputs."""

import math

import numpy as np
import pytest

from lhcbpid.features import (COMBINED_DLLS, DERIVED, PidFeatures, RICH_DLLS, SIGNED_LOG_COLUMNS, derived_features,
                              fit_statistics, signed_log, transformed_features)
from lhcbpid.schema import FEATURES, GROUPS, SENTINEL, feature_index


def typical_row() -> np.ndarray:
    """A plausible pion-like track with every subdetector present."""
    row = np.ones(len(FEATURES), dtype=np.float32)
    values = {"TrackP": 15000.0, "TrackPt": 900.0, "EcalE": 4500.0, "HcalE": 6000.0, "PrsE": 2.5, "SpdE": 3.2,
              "GhostProbability": 0.01, "DLLelectron": -8.0, "DLLmuon": -5.0, "DLLkaon": -20.0, "DLLproton": -25.0}
    for name, value in values.items():
        row[feature_index(name)] = value
    return row


def rows_with_missing(groups: list[str]) -> np.ndarray:
    """A typical row with every column of the named subdetector groups set to -999 (flags set to 0)."""
    row = typical_row()
    for g in groups:
        for name in GROUPS[g]:
            row[feature_index(name)] = 0.0 if name.startswith("Flag") else SENTINEL
    return row[None, :]


def test_signed_log_is_odd_and_matches_log1p():
    v = np.array([-1000.0, -1.0, 0.0, 0.5, 1e6], dtype=np.float32)
    assert np.allclose(np.asarray(signed_log(v)), np.sign(v) * np.log1p(np.abs(v)), rtol=1e-6)


def test_combined_dlls_become_probabilities_with_pion_at_zero():
    row = typical_row()
    for name in COMBINED_DLLS:
        row[feature_index(name)] = 0.0
    values = np.asarray(derived_features(row[None, :]))
    assert np.allclose(values[0, :5], math.log(1 / 5), atol=1e-6)  # all hypotheses equally likely
    row[feature_index("DLLkaon")] = 30.0
    values = np.asarray(derived_features(row[None, :]))
    assert values[0, 3] == pytest.approx(0.0, abs=1e-6)  # kaon hypothesis takes all the probability


def test_missing_dlls_are_flagged_and_neutral():
    train = np.repeat(typical_row()[None, :], 50, axis=0)
    train[::2] = rows_with_missing(["combined", "rich"])
    stats = fit_statistics(train)
    x = np.concatenate([rows_with_missing(["combined", "rich"]), typical_row()[None, :]])
    _, missing = (np.asarray(t) for t in transformed_features(x))
    out = np.asarray(PidFeatures(**stats)(x))
    derived = slice(len(FEATURES), len(FEATURES) + len(COMBINED_DLLS) + 1 + len(RICH_DLLS) + 1)
    assert (missing[0, derived] > 0).all() and (out[0, derived] == 0).all()
    assert not missing[1, derived].any()


def test_energy_over_momentum():
    x = typical_row()[None, :]
    values = np.asarray(derived_features(x))
    after_dlls = len(COMBINED_DLLS) + 1 + len(RICH_DLLS) + 1
    assert [name for name, _ in DERIVED[after_dlls:after_dlls + 2]] == ["EcalE/TrackP", "HcalE/TrackP"]
    assert values[0, after_dlls] == pytest.approx(4500.0 / 15000.0, rel=1e-6)
    assert values[0, after_dlls + 1] == pytest.approx(6000.0 / 15000.0, rel=1e-6)


def test_extreme_values_give_finite_bounded_inputs():
    train = np.repeat(typical_row()[None, :], 50, axis=0) * np.linspace(0.5, 1.5, 50, dtype=np.float32)[:, None]
    layer = PidFeatures(**fit_statistics(train))
    x = np.repeat(typical_row()[None, :], 3, axis=0)
    x[0], x[1], x[2, ::2] = 3.4e38, -3.4e38, 0.0
    out = np.asarray(layer(x))
    assert np.isfinite(out).all() and np.abs(out).max() <= 8.0


def test_heavy_tailed_columns_are_logged_and_others_are_not():
    x = typical_row()[None, :]
    values, _ = (np.asarray(t) for t in transformed_features(x))
    p, flag = feature_index("TrackP"), feature_index("FlagRICH1")
    assert "TrackP" in SIGNED_LOG_COLUMNS and values[0, p] == pytest.approx(math.log1p(15000.0), rel=1e-6)
    assert values[0, flag] == 1.0


@pytest.mark.parametrize("groups", [[], ["muon"], ["spd", "prs", "ecal", "hcal", "brem"], ["rich", "combined"],
                                    ["spd", "prs", "ecal", "hcal", "brem", "rich", "combined", "muon"]])
def test_missing_values_become_zero_with_an_indicator(groups):
    rng = np.random.default_rng(0)
    train = np.repeat(typical_row()[None, :], 200, axis=0) * rng.uniform(0.5, 1.5, (200, len(FEATURES)))
    train[::4] = rows_with_missing(["spd", "prs", "ecal", "hcal", "brem", "rich", "combined", "muon"])
    train = train.astype(np.float32)
    stats = fit_statistics(train)
    layer = PidFeatures(**stats)
    x = rows_with_missing(groups)
    out = np.asarray(layer(x))
    assert out.shape == (1, len(stats["mean"]) + len(stats["missable"]))
    assert np.isfinite(out).all() and np.abs(out).max() <= 8.0
    missing_columns = [feature_index(n) for g in groups for n in GROUPS[g] if not n.startswith("Flag")]
    assert (out[0, missing_columns] == 0).all()
    indicators = out[0, len(stats["mean"]):]
    expected = np.isin(stats["missable"], missing_columns).astype(np.float32)
    assert (indicators == expected).all()


def test_statistics_ignore_missing_values():
    x = np.repeat(typical_row()[None, :], 10, axis=0)
    x[:5, feature_index("EcalE")] = SENTINEL
    x[5:, feature_index("EcalE")] = np.arange(5) * 1000.0
    stats = fit_statistics(x)
    i = feature_index("EcalE")
    assert stats["mean"][i] == pytest.approx(np.mean(np.log1p(np.arange(5) * 1000.0)), rel=1e-5)
    assert i in stats["missable"] and feature_index("TrackP") not in stats["missable"]
