"""PNG figures of a run: training curves and prediction-vs-truth overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from biounet.atomic import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Training loss and validation metrics against epochs."""
    if not history:
        return
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    metrics = sorted({k for row in history for k in row if k.startswith("val_")})
    fig, axes = plt.subplots(1, 1 + bool(metrics), figsize=(10 if metrics else 5, 4), squeeze=False)
    axes[0][0].plot(epochs, [row["train_loss"] for row in history], label="train loss")
    axes[0][0].set(xlabel="epoch", ylabel="loss", yscale="log", title="training loss")
    if metrics:
        for key in metrics:
            points = [(row["epoch"], row[key]) for row in history if key in row]
            axes[0][1].plot(*zip(*points, strict=True), marker="o", label=key.removeprefix("val_"))
        axes[0][1].set(xlabel="epoch", title="validation")
        axes[0][1].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def plot_overlay(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, path: Path, title: str = "") -> None:
    """Image, truth and prediction side by side, and the errors in colour on the image.

    Args:
        image: ``(C, *S)`` or ``(*S)``, ``S`` 2D or 3D; the first channel is shown. Of a volume, the slice
            along the first axis with the most annotated foreground is shown.
        truth: ``(*S)`` class map (negative = unannotated).
        prediction: ``(*S)`` class map.
        path: PNG to write.
        title: figure title.
    """
    plt = _pyplot()
    gray = image[0] if image.ndim == truth.ndim + 1 else image
    if truth.ndim == 3:
        index = int(np.argmax((truth > 0).sum(axis=(1, 2))))
        gray, truth, prediction = gray[index], truth[index], prediction[index]
        title = f"{title} (slice {index})"
    lo, hi = np.percentile(gray, [1, 99])
    gray = np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)
    errors = np.stack([gray] * 3, axis=-1)
    annotated = truth >= 0
    # Red: predicted foreground where the truth is background; blue: missed foreground.
    errors[annotated & (prediction > 0) & (truth == 0)] = (1.0, 0.1, 0.1)
    errors[annotated & (prediction == 0) & (truth > 0)] = (0.1, 0.3, 1.0)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    panels = [(gray, "image", "gray"), (truth, "truth", "viridis"), (prediction, "prediction", "viridis"),
              (errors, "errors (red: false fg, blue: missed fg)", None)]
    for ax, (data, name, cmap) in zip(axes, panels, strict=True):
        ax.imshow(data, cmap=cmap, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
