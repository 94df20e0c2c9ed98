"""The Segment widget: a model, an image layer, a few settings; the result as probability and Labels layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from biounet.errors import BiounetError
from biounet.infer.predict import TileOptions
from biounet.infer.rescale import AS_IT_IS
from biounet.models.instance_params import InstanceParams
from biounet.napari.jobs import JobCancelledError, JobWidget
from biounet.napari.layers import ORIGINAL, Segmentation, resplit, segment
from biounet.napari.models import MODELS, devices, load_model

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

    from biounet.models.checkpoint import Checkpoint


class SegmentWidget(JobWidget):
    """Segments an image layer with a biounet model in a worker thread (the viewer stays responsive).

    Adds ``<image> probability`` (the foreground probability) and ``<image> objects`` (an instance model's
    objects) or ``<image> classes`` (a semantic model's mask), at the image's scale and position. A 2D model
    segments stacks and time series plane by plane; a 3D model segments volumes.

    Args:
        napari_viewer: the viewer (napari passes it).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__("Segment", "Cancel")
        self.viewer = napari_viewer
        self.model = QComboBox()
        self.browse = QPushButton("Open…")
        self.browse.setToolTip("a biounet checkpoint (.pt) or a BioImage Model Zoo package made by biounet (.zip)")
        self.image = QComboBox()
        self.tta = QCheckBox("test-time augmentation (up to 8x slower)")
        self.tta.setToolTip("average over the rotations/flips the model was trained on; a model's training "
                            "turns it on where it paid on its validation images")
        self.tile = QSpinBox()
        self.tile.setRange(0, 4096)
        self.tile.setSpecialValueText("model default")
        self.tile.setToolTip("network input size per axis in pixels; smaller needs less memory")
        self.device = QComboBox()
        self.device.addItems(devices())
        # The image's object size: it is rescaled so that its objects are the size the model learnt.
        self.object_size = QDoubleSpinBox()
        self.object_size.setRange(0.0, 10000.0)
        self.object_size.setDecimals(1)
        self.object_size.setSuffix(" px")
        self.object_size.setSpecialValueText("as it is")
        self.object_size.setToolTip("the diameter of the image's objects in pixels: the image is rescaled so that "
                                    "they are the size the model was trained on, and the result back")
        self.auto_size = QCheckBox("estimate")
        self.auto_size.setToolTip("measure the objects of a first pass and predict again rescaled when they are "
                                  "more than 1.25x off the model's size")
        self.auto_size.toggled.connect(lambda on: self.object_size.setEnabled(not on))
        # An instance model's post-processing, from its checkpoint (tuned on its validation images).
        self.seed, self.foreground = _probability_box(), _probability_box()
        self.seed.setToolTip("interior probability that seeds an object: higher splits fewer touching objects")
        self.foreground.setToolTip("object probability a pixel needs: higher gives smaller objects")
        self.min_size = QSpinBox()
        self.min_size.setRange(0, 10**9)
        self.min_size.setSuffix(" px")
        self.min_size.setToolTip("objects smaller than this are dropped (in the model's pixels: for an image "
                                 "rescaled by an object size, in those of the rescaled image)")
        self.objects = QGroupBox("objects (instance models)")
        objects_form = QFormLayout(self.objects)
        objects_form.addRow("seed", self.seed)
        objects_form.addRow("foreground", self.foreground)
        objects_form.addRow("min size", self.min_size)
        # The last instance result: its Labels layer, the result and its model, to re-split when the object
        # settings move (no second prediction).
        self.last: tuple[Labels, Segmentation, Checkpoint] | None = None
        for box in (self.seed, self.foreground, self.min_size):
            box.valueChanged.connect(self._resplit)

        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("model", model_row)
        form.addRow("image", self.image)
        form.addRow("tile", self.tile)
        form.addRow("device", self.device)
        size_row = QHBoxLayout()
        size_row.addWidget(self.object_size, 1)
        size_row.addWidget(self.auto_size)
        self.size_label = QLabel("object size")
        form.addRow(self.size_label, size_row)
        form.addRow(self.tta)
        form.addRow(self.objects)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        self.add_job_controls(layout)
        layout.addStretch(1)

        self.model.currentTextChanged.connect(self._model_chosen)
        self._refresh_models()
        self._refresh_images()
        MODELS.changed.connect(self._model_added)
        self.browse.clicked.connect(self._open_model)
        self.start_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)

    # -- choices ---------------------------------------------------------------------------------------

    def _refresh_models(self, select: str | None = None) -> None:
        current = select or self.model.currentText()
        self.model.clear()
        self.model.addItems(MODELS.names())
        if current in MODELS.names():
            self.model.setCurrentText(current)

    def _model_added(self, name: str) -> None:
        self._refresh_models(select=name)

    def _model_chosen(self, name: str) -> None:
        """Shows the chosen model's post-processing and test-time augmentation (a model that cannot be read
        says so when run)."""
        params, size = None, None
        self.last = None  # the settings shown now are the new model's: not for the last result
        if name in MODELS.names():
            try:
                model = load_model(MODELS.path(name))
            except BiounetError as exc:
                self.status.setText(f"error: {exc}")
            else:
                params = model.instances
                self.tta.setChecked(model.tta.enabled)
                self.tta.setEnabled(model.tta.symmetry != "none")
                size = model.object_size
        sized = size is not None
        self.auto_size.setChecked(size is not None and size.estimate)  # the model's default
        self.auto_size.setEnabled(sized)
        self.object_size.setEnabled(sized and not self.auto_size.isChecked())
        self.size_label.setToolTip(f"the model's objects: {size.describe()}" if size is not None
                                   else "the model records no object size")
        self.objects.setEnabled(params is not None)
        if params is not None:
            self.seed.setValue(params.seed)
            self.foreground.setValue(params.foreground)
            self.min_size.setValue(params.min_size)

    def _open_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a biounet model", "", "biounet models (*.pt *.zip)")
        if path:
            MODELS.add(path)

    def _refresh_images(self, *_: Any) -> None:
        from napari.layers import Image

        current = self.image.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.image.clear()
        self.image.addItems(names)
        if current in names:
            self.image.setCurrentText(current)
        elif names:
            self.image.setCurrentText(names[-1])

    # -- the job ---------------------------------------------------------------------------------------

    def run(self) -> Any:
        """Starts segmenting the chosen image; returns the worker (``None`` if nothing could start)."""
        name = self.image.currentText()
        if not name or self.model.currentText() not in MODELS.names():
            self.status.setText("choose a model and an image layer")
            return None
        layer: Image = self.viewer.layers[name]
        data = layer.data[0] if layer.multiscale else layer.data
        size: float | str | None = None
        if self.auto_size.isEnabled():
            size = "auto" if self.auto_size.isChecked() else self.object_size.value() or AS_IT_IS
        settings: dict[str, Any] = {"options": TileOptions(tile=self.tile.value() or None, tta=self.tta.isChecked(),
                                                       device=self.device.currentText(), object_size=size)}
        if self.objects.isEnabled():
            try:
                settings["instances"] = InstanceParams(self.seed.value(), self.foreground.value(),
                                                       self.min_size.value())
            except BiounetError as exc:
                self.status.setText(f"error: {exc}")
                return None
        model_path = MODELS.path(self.model.currentText())
        relay, cancel = self.relay, self.stop_requested

        def report(fraction: float) -> None:
            if cancel.is_set():
                raise JobCancelledError
            relay.fraction.emit(fraction)

        def job() -> tuple[Segmentation, Checkpoint]:
            model = load_model(model_path)
            return segment(model, data, bool(layer.rgb), on_progress=report, **settings), model

        return self.start_job(job, lambda done: self._add_layers(layer, *done), f"segmenting {name}…")

    def cancel(self) -> None:
        """Stops the running job after its current batch of tiles."""
        self.stop_requested.set()
        self.status.setText("cancelling…")

    def _resplit(self, *_: Any) -> None:
        """Splits the last instance result into objects again with the settings shown, if its Labels layer
        is still in the viewer and unedited (painted corrections are never overwritten)."""
        if self.last is None or self.busy:
            return
        labels, result, model = self.last
        if labels not in self.viewer.layers:
            self.last = None
            return
        if not np.array_equal(labels.data, labels.metadata[ORIGINAL]):
            self.status.setText("the objects were edited: segment again to split them with these settings")
            return
        try:
            params = InstanceParams(self.seed.value(), self.foreground.value(), self.min_size.value())
        except BiounetError as exc:
            self.status.setText(f"error: {exc}")
            return
        objects = resplit(result, model, params)
        labels.data = objects
        labels.metadata[ORIGINAL] = objects.copy()
        self.status.setText(f"{int(objects.max(initial=0))} objects")

    def _add_layers(self, image: Image, result: Segmentation, model: Checkpoint) -> None:
        # The layer's scale and position, for the axes the result has (the image's without channels).
        shown = result.axes[:-1] if image.rgb else result.axes
        keep = [i for i, a in enumerate(shown) if a != "C"]
        scale = [image.scale[i] for i in keep]
        translate = [image.translate[i] for i in keep]
        self.viewer.add_image(result.probability, name=f"{image.name} probability", scale=scale,
                              translate=translate, colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.5,
                              blending="additive", visible=False)
        kind = "objects" if result.instances else "classes"
        layer = self.viewer.add_labels(result.labels, name=f"{image.name} {kind}", scale=scale,
                                       translate=translate, opacity=0.5, metadata={ORIGINAL: result.labels.copy()})
        self.last = (layer, result, model) if result.instances else None
        found = int(result.labels.max(initial=0))
        sized = "" if result.object_size is None else \
            f" (objects of {result.object_size:.1f} px: " + \
            ("as it is)" if result.scale == 1.0 else f"rescaled {result.scale:.3g}x)")
        self.status.setText((f"{found} objects" if result.instances else f"{found + 1} classes in the mask") + sized)
        self.progress.setValue(1000)


def _probability_box() -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0.01, 0.99)
    box.setSingleStep(0.05)
    box.setDecimals(3)
    return box
