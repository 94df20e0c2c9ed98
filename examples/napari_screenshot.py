"""Renders the README's napari screenshot headless: the nuclei sample segmented by the shipped model, one
object corrected with the brush, and a short fine-tuning run on the correction, with both widgets docked.

    xvfb-run -a env QT_QPA_PLATFORM=offscreen .venv/bin/python examples/napari_screenshot.py docs/assets/napari.png

(Qt draws off screen; the X server only gives napari's canvas its OpenGL context.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import napari
import numpy as np
from qtpy.QtWidgets import QApplication


def wait(widget: Any) -> None:
    """Runs a widget's job and waits until its results are in the viewer."""
    widget.run()
    deadline = time.monotonic() + 300
    while widget.busy and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let the results draw
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/assets/napari.png"))
    args = parser.parse_args()
    viewer = napari.Viewer(show=False, title="biounet in napari")
    viewer.window.resize(1500, 860)
    viewer.open_sample("biounet", "nuclei")
    _, segment = viewer.window.add_plugin_dock_widget("biounet", "Segment")
    _, train = viewer.window.add_plugin_dock_widget("biounet", "Train / fine-tune", tabify=False)
    segment.model.setCurrentText("nuclei")
    wait(segment)
    labels = viewer.layers[-1]
    # A correction, as with the brush: one object painted over with a new label.
    first = np.argwhere(labels.data == 1)[len(np.argwhere(labels.data == 1)) // 2]
    labels.brush_size = 15
    labels.paint(tuple(first), int(labels.data.max()) + 1)
    train.labels.setCurrentText(labels.name)
    train.run_dir.edit.setText(str(Path(tempfile.mkdtemp()) / "fine-tuned"))
    train.minutes.setValue(1.0)
    train.settings.setText("samples_per_epoch=4")
    wait(train)
    viewer.layers.selection.active = labels
    labels.opacity = 0.45
    viewer.reset_view()
    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, image)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]}); segment: {segment.status.text()}; train: "
          f"{train.status.text()}")
    viewer.close()


if __name__ == "__main__":
    main()
