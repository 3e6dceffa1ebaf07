"""The figures: ROC curves, loss per epoch, confusion matrix, efficiency versus momentum."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lhcbpid.atomic import atomic_path  # noqa: E402
from lhcbpid.evaluate import roc_curves  # noqa: E402
from lhcbpid.schema import CLASSES  # noqa: E402

COLORS = dict(zip(CLASSES, ("tab:blue", "tab:gray", "tab:red", "tab:green", "tab:orange", "tab:purple")))


def _save(fig, path: Path) -> None:
    """Save a figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_roc(y: np.ndarray, P: np.ndarray, aucs: dict[str, float], path: Path, source: str) -> None:
    """One-vs-rest ROC curve per class, AUC in the legend; right panel with the rest rate on a log scale."""
    fig, (linear, logx) = plt.subplots(1, 2, figsize=(12, 5.4))
    for c, (fpr, tpr) in roc_curves(y, P).items():
        for ax in (linear, logx):
            ax.plot(fpr, tpr, color=COLORS[c], lw=1.6, label=f"{c} (AUC = {aucs[c]:.4f})")
    linear.plot([0, 1], [0, 1], ls=":", color="black", lw=0.8)
    linear.set(xlim=(0, 1), ylim=(0, 1.005), title="linear scale")
    logx.set(xscale="log", xlim=(1e-4, 1), ylim=(0, 1.005), title="rest accepted on a log scale")
    for ax in (linear, logx):
        ax.set(xlabel="False positive rate (rest accepted)", ylabel="True positive rate (class accepted)")
        ax.grid(alpha=0.3)
    linear.legend(loc="lower right")
    fig.suptitle(f"ROC curves, each class vs the rest\n{source}")
    fig.tight_layout()
    _save(fig, path)


def plot_training(history: dict[str, list[float]], path: Path, source: str) -> None:
    """Train and validation loss per epoch, best epoch marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], marker="o", ms=3, label="train")
    ax.plot(epochs, history["val_loss"], marker="o", ms=3, label="validation")
    best = int(np.argmin(history["val_loss"])) + 1
    ax.axvline(best, ls="--", color="gray", lw=0.8, label=f"best epoch ({best})")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"Learning curve\n{source}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_confusion(counts: np.ndarray, path: Path, source: str) -> None:
    """Row-normalised confusion matrix with counts and class names."""
    counts = np.asarray(counts)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, f"{rates[i, j]:.3f}\n{counts[i, j]:,}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=30)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set(xlabel="predicted class", ylabel="true class", title=f"Confusion matrix (rows sum to 1)\n{source}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_efficiency(y: np.ndarray, P: np.ndarray, momentum: np.ndarray, transverse: np.ndarray,
                    path: Path, source: str, efficiency: float = 0.9) -> None:
    """Per class, efficiency and misidentification versus p and pT at a cut giving `efficiency` overall."""
    fig, axes = plt.subplots(2, len(CLASSES), figsize=(4 * len(CLASSES), 7), sharey=True)
    for k, c in enumerate(CLASSES):
        cut = np.quantile(P[y == k, k], 1 - efficiency)
        accepted = P[:, k] >= cut
        for row, (values, name) in enumerate(((momentum, "p [GeV/c]"), (transverse, "pT [GeV/c]"))):
            ax = axes[row, k]
            gev = values / 1000.0
            edges = np.quantile(gev, np.linspace(0, 1, 13))
            centers = 0.5 * (edges[1:] + edges[:-1])
            bins = np.clip(np.digitize(gev, edges[1:-1]), 0, len(centers) - 1)
            for other in range(len(CLASSES)):
                rows = y == other
                hits = np.bincount(bins[rows], weights=accepted[rows], minlength=len(centers))
                total = np.maximum(np.bincount(bins[rows], minlength=len(centers)), 1)
                style = dict(lw=2.2, marker="o", ms=3) if other == k else dict(lw=1, ls="--")
                ax.plot(centers, hits / total, color=COLORS[CLASSES[other]], label=CLASSES[other], **style)
            ax.set_xscale("log")
            ax.set(xlabel=name, ylim=(0, 1.02))
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{c} selection, {efficiency:.0%} overall")
    axes[0, 0].set_ylabel("fraction accepted")
    axes[1, 0].set_ylabel("fraction accepted")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(f"Efficiency (solid) and misidentification (dashed)\n{source}")
    fig.tight_layout()
    _save(fig, path)
