"""Metrics from predicted probabilities: per-class ROC AUC, log loss, accuracy, confusion, efficiencies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score, roc_curve

from lhcbpid.atomic import write_atomic
from lhcbpid.errors import InputError
from lhcbpid.schema import CLASSES, FEATURES


def class_aucs(y: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """One-vs-rest ROC AUC per class, in schema order."""
    return {c: float(roc_auc_score(y == k, P[:, k])) for k, c in enumerate(CLASSES)}


def roc_curves(y: np.ndarray, P: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest (false positive rate, true positive rate) per class."""
    return {c: roc_curve(y == k, P[:, k])[:2] for k, c in enumerate(CLASSES)}


def pairwise_auc(y: np.ndarray, P: np.ndarray, a: str, b: str) -> float:
    """AUC of class a against class b only, on rows of those two classes, scored by P(a) / (P(a) + P(b))."""
    ia, ib = CLASSES.index(a), CLASSES.index(b)
    rows = (y == ia) | (y == ib)
    score = P[rows, ia] / np.maximum(P[rows, ia] + P[rows, ib], 1e-12)
    return float(roc_auc_score(y[rows] == ia, score))


def absent_classes(y: np.ndarray) -> list[str]:
    """Classes with no row in y (their one-vs-rest ROC AUC, efficiency and misidentification are undefined)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(CLASSES))
    return [c for k, c in enumerate(CLASSES) if counts[k] == 0]


def _require_every_class(y: np.ndarray, where: str) -> None:
    """InputError naming the first class with no row in y (instead of NaN AUCs in particles.json)."""
    absent = absent_classes(y)
    if absent:
        others = f" (nor of {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise InputError(f"{where}: {len(y):,} row{'s' * (len(y) != 1)} but none of class {absent[0]}{others}; "
                         f"each class's ROC AUC needs rows of it: use labelled data with rows of every class "
                         f"({', '.join(CLASSES)})")


def classification_metrics(y: np.ndarray, P: np.ndarray) -> dict:
    """Everything users read off a classifier: AUCs, log loss, accuracy, confusion, efficiency and misidentification."""
    _require_every_class(y, "the scored data")
    predicted = P.argmax(axis=1)
    counts = confusion_matrix(y, predicted, labels=range(len(CLASSES)))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return {
        "rows": int(len(y)),
        "test_auc": class_aucs(y, P),
        "log_loss": float(log_loss(y, np.clip(P, 1e-7, 1.0), labels=range(len(CLASSES)))),
        "accuracy": float((predicted == y).mean()),
        "efficiency": {c: float(rates[k, k]) for k, c in enumerate(CLASSES)},
        "misidentification": {t: {p: float(rates[i, j]) for j, p in enumerate(CLASSES) if j != i}
                              for i, t in enumerate(CLASSES)},
        "kaon_vs_proton_auc": pairwise_auc(y, P, "Kaon", "Proton"),
        "confusion_counts": counts.tolist(),
    }


def particles_json(aucs: dict[str, float]) -> str:
    """The homework's particles.json: exactly {"test_auc": {class: auc}}, full float precision."""
    return json.dumps({"test_auc": {c: aucs[c] for c in CLASSES}}, indent=2) + "\n"


def write_metrics(out: Path, metrics: dict, extra: dict) -> None:
    """Write particles.json and metrics.json (metrics plus provenance) atomically."""
    write_atomic(out / "particles.json", particles_json(metrics["test_auc"]))
    write_atomic(out / "metrics.json", json.dumps({**extra, "test": metrics}, indent=2) + "\n")


def evaluate_file(model: Path, data: Path, labels: Path | None, out: Path) -> dict:
    """Score an ONNX model on a labelled file (or a test file plus its labels file); write metrics and figures."""
    from lhcbpid.data import file_sha256, read_dataset, read_labels
    from lhcbpid.plots import plot_confusion, plot_efficiency, plot_roc
    from lhcbpid.predict import load_model, predict_proba
    from lhcbpid.provenance import describe_source

    session, metadata = load_model(model)
    features = metadata.get("feature_names", FEATURES)
    dataset = read_dataset(data, features=features)
    y = dataset.y
    if y is None:
        labels = labels or Path(f"{data}.labels.csv")
        if not labels.exists():
            raise InputError(f"{data}: no Label column and no labels file {labels}; pass --labels FILE (columns ID,Label)")
        if dataset.ids is None:
            raise InputError(f"{data}: no Label and no ID column, so labels cannot be matched; add a Label column")
        y = read_labels(labels, dataset.ids)
    _require_every_class(y, str(data))  # checked before anything is written
    P = predict_proba(session, dataset.X)
    metrics = classification_metrics(y, P)
    source = describe_source(data)
    out = Path(out)
    write_metrics(out, metrics, {"model": str(model), "data": str(data), "data_sha256": file_sha256(data),
                                 "source": source})
    plot_roc(y, P, metrics["test_auc"], out / "roc.png", source)
    plot_confusion(np.asarray(metrics["confusion_counts"]), out / "confusion.png", source)
    column = {name: dataset.X[:, list(features).index(name)] for name in ("TrackP", "TrackPt")}
    plot_efficiency(y, P, column["TrackP"], column["TrackPt"], out / "efficiency.png", source)
    print(f"{len(y):,} rows ({source}): log loss {metrics['log_loss']:.4f}  "
          + "  ".join(f"{c} {a:.4f}" for c, a in metrics["test_auc"].items()), file=sys.stderr)
    print(f"wrote particles.json, metrics.json, roc.png, confusion.png, efficiency.png to {out}", file=sys.stderr)
    return metrics
