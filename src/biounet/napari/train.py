"""The Train / fine-tune widget: from an image and a Labels layer (painted corrections) or from folders,
starting from a shipped model or a checkpoint, within a minutes budget, with a live plot."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from biounet.errors import BiounetError
from biounet.napari.collection import Corrections
from biounet.napari.jobs import JobWidget
from biounet.napari.layers import IGNORE, ORIGINAL, training_label
from biounet.napari.models import MODELS, devices, load_model

if TYPE_CHECKING:
    import napari

    from biounet.training.config import TrainConfig
    from biounet.training.trainer import Trainer

NEW_MODEL = "(new model, planned from the data)"
LAYERS, FOLDERS = "image and Labels layers", "folders of images and labels"


class TrainWidget(JobWidget):
    """Trains or fine-tunes a model in a worker thread; the result is offered by the Segment widget at once.

    From layers, a Labels layer that a Segment run made is trained on where it was corrected (and a few
    pixels around each correction); its unpainted pixels are ignored. Any other Labels layer is taken as
    drawn in full (0 = background). Stacks for a 2D model give one training pair per annotated plane. The
    image joins the corrections collection (:mod:`biounet.napari.collection`), listed in the widget, and the
    run trains on all of it. A fine-tuning run keeps what the start model knew (its own training data when
    at hand, distillation elsewhere) and ends with the new model against the start model in the status.

    Args:
        napari_viewer: the viewer (napari passes it).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__("Train", "Stop")
        self.viewer = napari_viewer
        self.source = QComboBox()
        self.source.addItems([LAYERS, FOLDERS])
        self.image = QComboBox()
        self.labels = QComboBox()
        self.images_dir = _PathEdit("folder of training images")
        self.labels_dir = _PathEdit("folder of their labels (same file names)")
        self.start_from = QComboBox()
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.1, 24 * 60)
        self.minutes.setValue(5.0)
        self.minutes.setSuffix(" min")
        self.minutes.setToolTip("the whole run's budget: reading the data, training, validation, saving")
        self.collection = _PathEdit("the corrections collection: every corrected image is kept here and trained on")
        self.collection.edit.setText(str(Path.home() / "biounet-corrections"))
        self.collection.edit.editingFinished.connect(self._list_collection)
        self.entries = QListWidget()
        self.entries.setMaximumHeight(90)
        self.run_dir = _PathEdit("the run directory (model.pt, log.csv, curves.png, overlays/)")
        self.run_dir.edit.setText(str(Path.home() / "biounet-runs" / time.strftime("run-%Y%m%d-%H%M%S")))
        self.settings = QLineEdit()
        self.settings.setPlaceholderText("optional key=value settings, e.g. samples_per_epoch=20 batch_size=2")
        self.device = QComboBox()
        self.device.addItems(devices())
        self.stop_button.setToolTip("ends the run after the current step, keeping the best model so far")
        self.plot = _LivePlot()

        layer_page, folder_page = QWidget(), QWidget()
        layer_form, folder_form = QFormLayout(layer_page), QFormLayout(folder_page)
        layer_form.addRow("image", self.image)
        layer_form.addRow("labels", self.labels)
        layer_form.addRow("collection", self.collection)
        layer_form.addRow(self.entries)
        folder_form.addRow("images", self.images_dir)
        folder_form.addRow("labels", self.labels_dir)
        self.pages = QStackedWidget()
        self.pages.addWidget(layer_page)
        self.pages.addWidget(folder_page)
        self.source.currentIndexChanged.connect(self.pages.setCurrentIndex)
        form = QFormLayout()
        form.addRow("train from", self.source)
        form.addRow(self.pages)
        form.addRow("start from", self.start_from)
        form.addRow("budget", self.minutes)
        form.addRow("run directory", self.run_dir)
        form.addRow("device", self.device)
        form.addRow("settings", self.settings)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        self.add_job_controls(layout)
        layout.addWidget(self.plot.canvas, 1)

        self.relay.loss.connect(self.plot.add_loss)
        self.relay.epoch.connect(self.plot.add_epoch)
        self._refresh_models()
        self._refresh_layers()
        self._list_collection()
        MODELS.changed.connect(self._model_added)
        self.start_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)

    # -- choices ---------------------------------------------------------------------------------------

    def _refresh_models(self) -> None:
        current = self.start_from.currentText()
        self.start_from.clear()
        self.start_from.addItems([*MODELS.names(), NEW_MODEL])
        if current:
            self.start_from.setCurrentText(current)

    def _model_added(self, _: str) -> None:
        self._refresh_models()

    def _refresh_layers(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        for combo, kind in ((self.image, Image), (self.labels, Labels)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)]
            combo.clear()
            combo.addItems(names)
            combo.setCurrentText(current if current in names else (names[-1] if names else ""))

    def _list_collection(self) -> None:
        self.entries.clear()
        try:
            found = Corrections(Path(self.collection.edit.text()).expanduser()).entries()
        except BiounetError as exc:
            self.status.setText(f"error: {exc}")
            return
        self.entries.addItems([f"{e.name}: {e.objects} objects, {e.annotated:.0%} annotated" for e in found])

    # -- the job ---------------------------------------------------------------------------------------

    def run(self) -> Any:
        """Starts the run; returns the worker (``None`` if the choices are incomplete)."""
        run_dir = Path(self.run_dir.edit.text()).expanduser()
        start = self.start_from.currentText()
        init = "" if start == NEW_MODEL else MODELS.path(start)
        minutes, device = float(self.minutes.value()), self.device.currentText()
        overrides = self.settings.text().split()
        try:
            if (run_dir / "last.pt").exists():
                raise BiounetError("a run already exists here; choose another run directory", run_dir)
            folders = self._folders(run_dir, init)
        except BiounetError as exc:
            self.status.setText(f"error: {exc}")
            return None
        relay, stop = self.relay, self.stop_requested

        def job() -> tuple[Path, str]:
            from biounet.training.run import train

            config = _config(init, *folders, minutes, device, overrides)
            run_dir.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()

            def step_done(trainer: Trainer) -> None:
                relay.loss.emit(trainer.state.step, trainer.last_loss)
                relay.fraction.emit((time.monotonic() - started) / (60 * minutes))
                if stop.is_set():
                    trainer.request_stop("stopped in napari")

            def epoch_done(trainer: Trainer) -> None:
                relay.epoch.emit(dict(trainer.row), f"val_{trainer.config.monitor}")

            train(config, run_dir, device=device, progress=False,
                  callbacks={"on_step_end": [step_done], "on_epoch_end": [epoch_done]})
            if not (run_dir / "model.pt").exists():
                raise BiounetError("stopped before the first validation: no model was saved", run_dir)
            if not init:
                return run_dir / "model.pt", ""
            from biounet.training.compare import compare_to_start

            return run_dir / "model.pt", compare_to_start(run_dir, config).report()

        self.plot.clear()
        return self.start_job(job, self._trained, f"training into {run_dir}…")

    def stop(self) -> None:
        """Ends the run after the current step; it still validates and saves the best model."""
        self.stop_requested.set()
        self.status.setText("stopping after this step…")

    def _folders(self, run_dir: Path, init: str) -> tuple[Path, Path, bool]:
        """The training folders, and whether their labels came from layers (with unannotated pixels)."""
        if self.source.currentText() == FOLDERS:
            images, labels = Path(self.images_dir.edit.text()), Path(self.labels_dir.edit.text())
            if not images.is_dir() or not labels.is_dir():
                raise BiounetError("choose the folders of training images and labels")
            return images, labels, False
        if not self.image.currentText() or not self.labels.currentText():
            raise BiounetError("choose an image layer and a Labels layer")
        image, labels = self.viewer.layers[self.image.currentText()], self.viewer.layers[self.labels.currentText()]
        config = load_model(init).config if init else None
        # A new model is 3D for a volume; to segment a stack plane by plane, start from a 2D model.
        dims = config.spatial_dims if config else (3 if labels.ndim == 3 else 2)
        channels = config.in_channels if config else (np.shape(image.data)[-1] if image.rgb else 1)
        label = training_label(np.asarray(labels.data), labels.metadata.get(ORIGINAL))
        collection = Corrections(Path(self.collection.edit.text()).expanduser())
        collection.add(_stem(image.name), image.data, bool(image.rgb), label, dims, channels)
        self._list_collection()
        return collection.images, collection.labels, True

    def _trained(self, done: tuple[Path, str]) -> None:
        model, comparison = done
        name = MODELS.add(model, f"{model.parent.name} (trained)")
        done_text = f"done: {model}; offered in Segment as '{name}'"
        self.status.setText(f"{done_text}\n{comparison}" if comparison else done_text)
        self.progress.setValue(1000)


def _config(init: str, images: Path, labels: Path, from_layers: bool, minutes: float, device: str,
            overrides: list[str]) -> TrainConfig:
    """A fine-tuning config from ``init``, or a planned one for a new model."""
    ignore = IGNORE if from_layers else None
    if init:
        from biounet.training.finetune import finetune_config

        return finetune_config(init, images, labels, minutes=minutes, ignore=ignore, overrides=overrides)
    from biounet.data.labels import LabelConfig
    from biounet.planning.planner import plan_run

    plan, _ = plan_run(images, labels, device, minutes, progress=False, labels_config=LabelConfig(ignore=ignore))
    extra = ["data.val_images=" + str(images), "data.val_labels=" + str(labels)] if from_layers else []
    return plan.config([*extra, *overrides])


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "image"


class _PathEdit(QWidget):
    """A folder field with a browse button."""

    def __init__(self, tip: str) -> None:
        super().__init__()
        self.edit = QLineEdit()
        self.edit.setToolTip(tip)
        button = QPushButton("…")
        button.setMaximumWidth(30)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(button)
        button.clicked.connect(self._browse)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, self.edit.toolTip(), self.edit.text())
        if path:
            self.edit.setText(path)


class _LivePlot:
    """Training loss per step and the validation score per epoch, redrawn as they come."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)  # type: ignore[no-untyped-call]
        self.canvas.setMinimumHeight(180)
        self.loss_axes = self.figure.add_subplot(111)
        self.score_axes = self.loss_axes.twinx()
        self.clear()

    def clear(self) -> None:
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.epochs: list[int] = []
        self.scores: list[float] = []
        self.monitor = "validation score"
        self._draw()

    def add_loss(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        if len(self.steps) % 5 == 1:  # redrawing costs more than a small step
            self._draw()

    def add_epoch(self, row: dict[str, float], monitor: str) -> None:
        """An epoch's log row; ``monitor`` names its score that picks the best model (absent on epochs
        without validation)."""
        self.monitor = monitor
        if monitor in row:
            self.epochs.append(int(row["step"]))
            self.scores.append(float(row[monitor]))
        self._draw()

    def _draw(self) -> None:
        self.loss_axes.clear()
        self.score_axes.clear()
        self.loss_axes.plot(self.steps, self.losses, color="tab:blue", linewidth=0.8)
        self.loss_axes.set_xlabel("step")
        self.loss_axes.set_ylabel("training loss", color="tab:blue")
        self.score_axes.plot(self.epochs, self.scores, "o-", color="tab:orange", markersize=3)
        self.score_axes.set_ylabel(self.monitor, color="tab:orange")
        self.score_axes.yaxis.set_label_position("right")
        self.canvas.draw_idle()  # type: ignore[no-untyped-call]
