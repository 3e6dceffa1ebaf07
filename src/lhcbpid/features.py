"""Preprocessing inside the model: -999 handling, signed logs, physics-derived inputs, standardisation.

Every function here is written with ``keras.ops`` so that one code path serves both the
statistics fitted in numpy on the training split and the graph that ends up in the ONNX file.
"""

from __future__ import annotations

import numpy as np
from lhcbpid.backend import keras, ops

from lhcbpid.schema import ACCEPTANCE_FLAGS, FEATURES, RICH_THRESHOLD_FLAGS, SENTINEL, feature_index

#: Heavy-tailed columns (momenta, energies, fit chi2, likelihoods) that go through a signed log.
SIGNED_LOG_COLUMNS: tuple[str, ...] = (
    "TrackP", "TrackPt", "EcalE", "HcalE", "PrsE", "EcalShowerLongitudinalParameter",
    "Calo2dFitQuality", "Calo3dFitQuality", "TrackQualitySubdetector1", "TrackQualitySubdetector2",
    "TrackDistanceToZ", "DLLelectron", "DLLmuon", "DLLkaon", "DLLproton",
    "RICH_DLLbeElectron", "RICH_DLLbeMuon", "RICH_DLLbeKaon", "RICH_DLLbeProton", "RICH_DLLbeBCK",
    "MuonLLbeMuon", "MuonLLbeBCK", "EcalDLLbeElectron", "EcalDLLbeMuon", "HcalDLLbeElectron",
    "HcalDLLbeMuon", "PrsDLLbeElectron", "BremDLLbeElectron",
)

#: Likelihood sets turned into per-species log-probabilities by a softmax with the pion at 0.
COMBINED_DLLS = ("DLLelectron", "DLLmuon", "DLLkaon", "DLLproton")
RICH_DLLS = ("RICH_DLLbeElectron", "RICH_DLLbeMuon", "RICH_DLLbeKaon", "RICH_DLLbeProton", "RICH_DLLbeBCK")

#: Standardised values are clipped to this range so no input can blow up the network.
CLIP = 8.0


def _col(x, name: str):
    """One raw column of the [N, 49] input as [N, 1]."""
    i = feature_index(name)
    return x[:, i:i + 1]


def signed_log(v):
    """sign(v) * log(|v| + 1), written without Log1p (tf2onnx has none)."""
    return ops.sign(v) * ops.log(ops.abs(v) + 1.0)


def missing_mask(x):
    """1.0 where a value is the -999 sentinel, else 0.0."""
    return ops.cast(ops.equal(x, SENTINEL), "float32")


def _dll_log_probabilities(x, names: tuple[str, ...]):
    """Per-species log-probabilities from DLLs versus the pion (pion = 0); zeros where missing."""
    dlls = ops.concatenate([_col(x, n) for n in names], axis=1)
    missing = missing_mask(dlls[:, :1])
    logits = ops.concatenate([ops.zeros_like(dlls[:, :1]), ops.clip(dlls, -100.0, 100.0)], axis=1)
    logp = ops.clip(ops.log_softmax(logits, axis=1), -30.0, 0.0)
    return logp * (1.0 - missing), missing


def _ratio(x, num: str, den: str):
    """num / den where num is present, else 0; with the missing flag."""
    a, b = _col(x, num), _col(x, den)
    missing = missing_mask(a)
    return ops.where(missing > 0, 0.0, a / ops.maximum(b, 1.0)), missing


def derived_features(x):
    """Physics-derived inputs and the missing pattern: returns (values [N, K], missing [N, K])."""
    values, missing = [], []
    for names in (COMBINED_DLLS, RICH_DLLS):
        logp, miss = _dll_log_probabilities(x, names)
        values.append(logp)
        missing.append(ops.repeat(miss, len(names) + 1, axis=1))
    for num in ("EcalE", "HcalE"):
        r, miss = _ratio(x, num, "TrackP")
        values.append(r)
        missing.append(miss)
    spd, prs = _col(x, "SpdE"), _col(x, "PrsE")
    calo_missing = ops.maximum(missing_mask(spd), missing_mask(prs))
    values.append(ops.where(calo_missing > 0, 0.0, signed_log(ops.maximum(spd, 0.0) + ops.maximum(prs, 0.0))))
    missing.append(calo_missing)
    p, pt = _col(x, "TrackP"), _col(x, "TrackPt")
    ratio = ops.maximum(p / ops.maximum(pt, 1.0), 1.0)
    values.append(ops.log(ratio + ops.sqrt(ratio * ratio - 1.0)))  # pseudorapidity
    values.append(ops.log(ops.clip(_col(x, "GhostProbability"), 0.0, 1.0) + 1e-4))
    for flags in (ACCEPTANCE_FLAGS, RICH_THRESHOLD_FLAGS):
        values.append(ops.sum(ops.clip(ops.concatenate([_col(x, f) for f in flags], axis=1), 0.0, 1.0),
                              axis=1, keepdims=True))
    values.append(ops.sum(missing_mask(x), axis=1, keepdims=True))
    missing.extend([ops.zeros_like(p)] * 5)
    return ops.concatenate(values, axis=1), ops.concatenate(missing, axis=1)


def transformed_features(x):
    """Raw columns with signed logs applied and derived inputs appended: (values, missing)."""
    log_mask = np.array([f in SIGNED_LOG_COLUMNS for f in FEATURES])
    raw = ops.where(log_mask[None, :], signed_log(x), x)
    raw_missing = missing_mask(x)
    extra, extra_missing = derived_features(x)
    return ops.concatenate([raw, extra], axis=1), ops.concatenate([raw_missing, extra_missing], axis=1)


def fit_statistics(X: np.ndarray) -> dict[str, list[float] | list[int]]:
    """Means and standard deviations of the transformed inputs over present values, and which columns can be missing."""
    values, missing = (np.asarray(t, dtype=np.float64) for t in transformed_features(X.astype(np.float32)))
    present = missing == 0
    count = np.maximum(present.sum(axis=0), 1)
    mean = np.where(present, values, 0.0).sum(axis=0) / count
    var = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0) / count
    std = np.sqrt(var)
    std = np.where(std > 1e-6, std, 1.0)
    raw_missing = missing[:, : len(FEATURES)]
    missable = np.flatnonzero(raw_missing.any(axis=0))
    return {"mean": mean.tolist(), "std": std.tolist(), "missable": missable.tolist()}


@keras.saving.register_keras_serializable(package="lhcbpid")
class PidFeatures(keras.layers.Layer):
    """Raw 49 columns in, standardised network inputs out: transformed values (missing -> 0) and missing indicators."""

    def __init__(self, mean: list[float], std: list[float], missable: list[int], **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std, self.missable = list(mean), list(std), list(missable)
        self._mean = np.asarray(mean, dtype=np.float32)
        self._inv_std = (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32)
        self._missable = np.asarray(missable, dtype=np.int32)

    def call(self, x):
        values, missing = transformed_features(x)
        z = ops.clip((values - self._mean) * self._inv_std, -CLIP, CLIP)
        z = ops.where(missing > 0, 0.0, z)
        indicators = ops.take(missing_mask(x), self._missable, axis=1)
        return ops.concatenate([z, indicators], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.mean) + len(self.missable))

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "missable": self.missable}
