"""Preprocessing inside the model: -999 handling, signed logs, physics-derived inputs, standardisation.

Every function here is written with ``keras.ops`` so that one code path serves both the
statistics fitted in numpy on the training split and the graph that ends up in the ONNX file.
The graph is kept to a few dozen nodes (column picks and the missing pattern are matmuls with 0/1
matrices), because the number of nodes, not arithmetic, bounds onnxruntime's speed here.
"""

from __future__ import annotations

import numpy as np
from lhcbpid.backend import keras, ops

from lhcbpid.schema import FEATURES, SENTINEL, feature_index

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

#: Derived inputs after the 49 raw ones, each with the raw columns whose absence makes it missing.
#: (Pseudorapidity, flag counts and the missing count are linear in other inputs, so the network needs no copy.)
DERIVED: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((f"combined logP({s})", ("DLLelectron",)) for s in ("pion", *COMBINED_DLLS)),
    *((f"RICH logP({s})", ("RICH_DLLbeElectron",)) for s in ("pion", *RICH_DLLS)),
    ("EcalE/TrackP", ("EcalE",)),
    ("HcalE/TrackP", ("HcalE",)),
    ("log(SpdE+PrsE)", ("SpdE", "PrsE")),
    ("log GhostProbability", ()),
)

#: Standardised values are clipped to this range so no input can blow up the network.
CLIP = 8.0


def _selector(columns: list[tuple[str, ...]]) -> np.ndarray:
    """[49, K] 0/1 matrix whose column k adds up the raw columns named in columns[k] (none: a zero column)."""
    matrix = np.zeros((len(FEATURES), len(columns)), dtype=np.float32)
    for k, names in enumerate(columns):
        matrix[[feature_index(n) for n in names], k] = 1.0
    return matrix


_LOGGED = np.array([f in SIGNED_LOG_COLUMNS for f in FEATURES])[None, :]
#: x @ this picks the columns the derived inputs need, in this order (a matmul is the fastest gather in onnxruntime);
#: each likelihood set is preceded by a zero column, the pion's logit.
_PICK = _selector([(), *((n,) for n in COMBINED_DLLS), (), *((n,) for n in RICH_DLLS),
                   *((n,) for n in ("TrackP", "EcalE", "HcalE", "SpdE", "PrsE", "GhostProbability"))])
#: missing mask [N, 49] @ this = missing pattern of every transformed input (> 0 means missing).
_MISSING = _selector([(f,) for f in FEATURES] + [names for _, names in DERIVED])


def signed_log(v):
    """sign(v) * log(|v| + 1), written without Log1p (tf2onnx has none) or Sign (slow in onnxruntime)."""
    magnitude = ops.abs(v)
    return v / (magnitude + 1e-30) * ops.log(magnitude + 1.0)


def missing_mask(x):
    """1.0 where a value is the -999 sentinel, else 0.0."""
    return ops.cast(ops.equal(x, SENTINEL), "float32")


def derived_features(x):
    """The DERIVED inputs [N, len(DERIVED)] from raw x (values where an input is missing are arbitrary)."""
    picked = ops.matmul(x, _PICK)
    combined, rich, p = picked[:, 0:5], picked[:, 5:11], ops.maximum(picked[:, 11:12], 1.0)
    return ops.concatenate([
        ops.clip(ops.log_softmax(combined, axis=1), -30.0, 0.0),  # per-species log-probabilities, pion = 0
        ops.clip(ops.log_softmax(rich, axis=1), -30.0, 0.0),
        picked[:, 12:14] / p,  # EcalE/p, HcalE/p
        ops.log(ops.sum(ops.maximum(picked[:, 14:16], 0.0), axis=1, keepdims=True) + 1.0),
        ops.log(ops.clip(picked[:, 16:17], 0.0, 1.0) + 1e-4),
    ], axis=1)


def transformed_features(x):
    """(values, missing): raw columns with signed logs then DERIVED inputs, and > 0 where an input is missing."""
    values = ops.concatenate([ops.where(_LOGGED, signed_log(x), x), derived_features(x)], axis=1)
    return values, ops.matmul(missing_mask(x), _MISSING)


def fit_statistics(X: np.ndarray) -> dict[str, list[float] | list[int]]:
    """Means and standard deviations of the transformed inputs over present values, and which columns can be missing."""
    values, missing = (np.asarray(t, dtype=np.float64) for t in transformed_features(X.astype(np.float32)))
    present = missing == 0
    count = np.maximum(present.sum(axis=0), 1)
    mean = np.where(present, values, 0.0).sum(axis=0) / count
    var = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0) / count
    std = np.sqrt(var)
    std = np.where(std > 1e-6, std, 1.0)
    missable = np.flatnonzero(~present[:, : len(FEATURES)].all(axis=0))
    return {"mean": mean.tolist(), "std": std.tolist(), "missable": missable.tolist()}


@keras.saving.register_keras_serializable(package="lhcbpid")
class PidFeatures(keras.layers.Layer):
    """Raw 49 columns in, standardised network inputs out: transformed values (missing -> 0) and missing indicators."""

    def __init__(self, mean: list[float], std: list[float], missable: list[int], **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std, self.missable = list(mean), list(std), list(missable)
        self._mean = np.asarray(mean, dtype=np.float32)
        self._inv_std = (1.0 / np.asarray(std, dtype=np.float64)).astype(np.float32)
        self._indicators = np.zeros((len(mean), len(missable)), dtype=np.float32)  # missing pattern @ this = indicators
        self._indicators[list(missable), range(len(missable))] = 1.0

    def call(self, x):
        values, missing = transformed_features(x)
        z = ops.clip((values - self._mean) * self._inv_std, -CLIP, CLIP) * ops.relu(1.0 - missing)
        return ops.concatenate([z, ops.matmul(missing, self._indicators)], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.mean) + len(self.missable))

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "missable": self.missable}
