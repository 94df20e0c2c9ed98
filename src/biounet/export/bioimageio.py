"""Writing a checkpoint as a BioImage Model Zoo package (https://bioimage.io), spec 0.5.

A package is a zip with a ``bioimageio.yaml`` description and the files it names: the weights as a PyTorch
state dict (with the architecture :func:`biounet.models.bioimageio.build_unet`, with the model config as its
keyword arguments), as TorchScript and as ONNX; raw test input and expected output tensors; a cover image;
the model card; a conda environment naming biounet. The description's ``config.biounet`` holds the
checkpoint's own config (normalisation, class names, instance parameters), so that
:func:`biounet.models.checkpoint.load_checkpoint` rebuilds exactly the checkpoint it was made from.

Writing needs the optional ``bioimageio.core`` (``pip install 'biounet[bioimageio]'``), imported only here
and only when a package is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from biounet._version import __version__
from biounet.atomic import atomic_path
from biounet.errors import BiounetError
from biounet.export.onnx import export_onnx
from biounet.infer.predict import predict
from biounet.models.bioimageio import DESCRIPTION_NAMES, build_unet
from biounet.models.checkpoint import FORMAT, FORMAT_VERSION, Checkpoint
from biounet.models.config import UNetConfig
from biounet.models.outputs import logits_to_probabilities
from biounet.models.unet import UNet

INSTALL_HINT = "pip install 'biounet[bioimageio]'"

CITATIONS = (
    {"text": "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
             "MICCAI 2015.", "doi": "10.1007/978-3-319-24574-4_28"},
    {"text": "Cicek, Abdulkadir, Lienkamp, Brox, Ronneberger. 3D U-Net: Learning Dense Volumetric "
             "Segmentation from Sparse Annotation. MICCAI 2016.", "doi": "10.1007/978-3-319-46723-8_49"},
)


@dataclasses.dataclass(frozen=True)
class PackageInfo:
    """What a package says about a model beyond its checkpoint.

    Args:
        name: human-readable name (letters, digits, ``_+-()`` and spaces; 5-128 characters).
        description: one or two sentences.
        authors: the people who trained or packaged the model.
        license: an SPDX license identifier.
        tags: keywords (``unet``, ``segmentation``, ``2d``/``3d`` and ``biounet`` are always added).
        pixel_size: the training images' pixel (voxel) size per spatial axis (Z, Y, X order), in ``unit``;
            ``None`` when unknown (the axes then carry no physical scale).
        unit: the spec's name of the pixel size's unit (``micrometer``, ``nanometer``, ...).
        modality: imaging modality, e.g. ``electron microscopy``.
        target_structure: what the model segments, e.g. ``["membranes"]``.
    """

    name: str
    description: str
    authors: tuple[str, ...] = ("biounet developers",)
    license: str = "MIT"
    tags: tuple[str, ...] = ()
    pixel_size: tuple[float, ...] | None = None
    unit: str = "micrometer"
    modality: str | None = None
    target_structure: tuple[str, ...] = ()


# What the shipped models' cards say about their data; a checkpoint itself stores no pixel size.
SHIPPED: dict[str, dict[str, Any]] = {
    "isbi2012-membranes": {
        # ISBI 2012 EM segmentation challenge: serial-section TEM of the Drosophila VNC, 4 x 4 x 50 nm voxels.
        "tags": ("electron-microscopy", "membranes", "semantic-segmentation", "drosophila"),
        "pixel_size": (0.004, 0.004), "unit": "micrometer", "modality": "electron microscopy",
        "target_structure": ("membranes", "cells"),
    },
    "nuclei": {
        # DSB 2018 images come from many microscopes at unrecorded magnifications: no single pixel size.
        "tags": ("fluorescence-light-microscopy", "brightfield-microscopy", "nuclei", "instance-segmentation"),
        "pixel_size": None, "modality": "fluorescence and brightfield light microscopy",
        "target_structure": ("nuclei",),
    },
}


def package_info(name: str, checkpoint: Checkpoint, card: str | None, shipped: str | None = None) -> PackageInfo:
    """A model's :class:`PackageInfo`: defaults, plus what is known about a shipped model.

    Args:
        name: the model's name (characters the spec does not allow become ``-``).
        checkpoint: the model.
        card: its model card (Markdown), whose first paragraph becomes the description.
        shipped: the shipped model's name, if it is one (its pixel size, modality and tags are known).
    """
    known: dict[str, Any] = dict(SHIPPED.get(shipped or "", {}))
    return PackageInfo(name=_clean_name(name), description=_description(card, checkpoint), **known)


def export_bioimageio(checkpoint: Checkpoint, path: str | Path, info: PackageInfo, *, card: str | None = None,
                      test_image: np.ndarray | None = None, opset: int = 17) -> None:
    """Writes ``checkpoint`` as a BioImage Model Zoo package (spec 0.5), atomically.

    The package describes the network as the spec runs it: raw input ``(batch, channel, [z,] y, x)`` ->
    ``ensure_dtype`` float32 -> the checkpoint's normalisation (``scale_range`` per sample and channel for
    ``percentile``, ``zero_mean_unit_variance`` for ``zscore``) -> U-Net -> ``softmax`` over channels
    (``sigmoid`` for one output and for a foreground/distance model's two) -> probabilities. Valid models'
    outputs are smaller than their inputs by the halo, said by a size reference with a negative offset;
    inputs may be ``min + n * step`` pixels with ``step`` the pooling grid. The package is tested with
    bioimageio.core before it is renamed into place.

    Args:
        checkpoint: the model.
        path: the destination ``.zip``.
        info: name, authors, tags, pixel size; see :func:`package_info`.
        card: the model card (Markdown) to include as documentation; generated from the checkpoint if
            ``None``.
        test_image: ``(C, *spatial)`` raw image to crop the test input and the cover from; a synthetic
            image if ``None``.
        opset: ONNX opset of the ONNX weights.

    Raises:
        BiounetError: if the ``bioimageio`` extra is missing, the output folder does not exist, the
            normalisation cannot be said in the spec, or the package fails bioimageio.core's test.
    """
    # Import first, so that a missing extra is said before any work is done.
    v05 = _import("bioimageio.spec.model.v0_5")
    _import("bioimageio.core")
    path = Path(path)
    if not path.parent.is_dir():
        raise BiounetError("output directory does not exist", path.parent)
    config = checkpoint.config
    image = _test_image(config, test_image)
    with tempfile.TemporaryDirectory(prefix="biounet-bioimageio-") as tmp_name:
        tmp = Path(tmp_name)
        files = _write_files(checkpoint, tmp, image, card, info, opset, synthetic=test_image is None)
        rdf = _describe(str(v05.ModelDescr.implemented_format_version), checkpoint, info, files, opset)
        with atomic_path(path) as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
                archive.writestr(DESCRIPTION_NAMES[0], yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True))
                for file in files.values():
                    archive.write(file, file.name)
            failure = _test_package(tmp_zip)
            if failure is not None:
                raise BiounetError(f"the package failed bioimageio.core's test: {failure}", path)


def _import(name: str) -> Any:
    """A bioimageio module, typed ``Any``: the optional extra is imported only when a package is written."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BiounetError(f"BioImage Model Zoo export needs the 'bioimageio' extra: {INSTALL_HINT}") from exc


def _test_package(path: Path) -> str | None:
    """Runs bioimageio.core's own test (all weight formats, on the CPU); ``None`` if it passed, else why not."""
    core = _import("bioimageio.core")
    summary = core.test_model(str(path), devices=["cpu"])
    if summary.status == "passed":
        return None
    errors = [f"{d.name}: {e.msg}" for d in summary.details for e in d.errors]
    # One line, as every BiounetError: the CLI prints it as the whole message.
    return " ".join("; ".join(errors).split())[:2000] or f"status {summary.status}"


def _axis_ids(dims: int) -> tuple[str, ...]:
    return ("z", "y", "x")[3 - dims:]


def _describe(format_version: str, checkpoint: Checkpoint, info: PackageInfo, files: dict[str, Path],
              opset: int) -> dict[str, Any]:
    """The spec 0.5 model description (``bioimageio.yaml`` content) of files written by :func:`_write_files`.

    Written as plain YAML rather than through bioimageio.spec's serialiser, which (spec 0.5.12) fails under
    pydantic >= 2.14; bioimageio.core's test of the finished package validates it against the spec instead.
    """
    config = checkpoint.config
    ids = _axis_ids(config.spatial_dims)
    scale = info.pixel_size or (1.0,) * config.spatial_dims
    if len(scale) != config.spatial_dims:
        raise BiounetError(f"pixel size needs {config.spatial_dims} values (Z, Y, X order), got {scale}")
    minimum = config.valid_input_shape((1,) * config.spatial_dims)
    halo = config.halo_size()
    out_names = list(checkpoint.class_names) if config.out_channels > 1 else [checkpoint.class_names[-1]]
    in_axes: list[dict[str, Any]] = [
        {"type": "batch"}, {"type": "channel", "id": "channel", "channel_names": _channel_names(config.in_channels)}]
    out_axes: list[dict[str, Any]] = [
        {"type": "batch"}, {"type": "channel", "id": "channel", "channel_names": out_names}]
    for axis, axis_id in enumerate(ids):
        physical: dict[str, Any] = {"scale": float(scale[axis])}
        if info.pixel_size is not None:
            physical["unit"] = info.unit
        # Valid sizes are the smallest one plus whole steps of the pooling grid (UNetConfig.valid_input_shape).
        in_axes.append({"type": "space", "id": axis_id, **physical,
                        "size": {"min": int(minimum[axis]), "step": int(config.alignment[axis])}})
        # A valid network crops its halo itself: the output is that much smaller, which the spec says with a
        # negative offset (its `halo` field is for a border the consumer should crop).
        out_axes.append({"type": "space", "id": axis_id, **physical,
                         "size": {"tensor_id": "input", "axis_id": axis_id, "offset": -int(halo[axis])}})
    # The spec's sigmoid acts on every value: a foreground/distance model's two channels are two sigmoids.
    sigmoid = config.out_channels == 1 or config.output == "distance"
    post: list[dict[str, Any]] = ([{"id": "sigmoid"}] if sigmoid
                                  else [{"id": "softmax", "kwargs": {"axis": "channel"}}])
    torch_version = torch.__version__.split("+")[0]
    return {
        "format_version": format_version,
        "type": "model",
        "name": info.name,
        "description": info.description,
        "authors": [{"name": a} for a in info.authors],
        "cite": [dict(c) for c in CITATIONS],
        "license": info.license,
        "tags": list(dict.fromkeys(["unet", "segmentation", f"{config.spatial_dims}d", "pytorch", "biounet",
                                    *info.tags])),
        "documentation": _file(files["documentation"]),
        "covers": [_file(files["cover"])],
        "inputs": [{
            "id": "input", "description": "raw image; normalised by the preprocessing", "axes": in_axes,
            "test_tensor": _file(files["test_input"]), "sample_tensor": _file(files["sample_input"]),
            "data": {"type": "float32"},
            "preprocessing": _preprocessing(checkpoint, ids),
        }],
        "outputs": [{
            "id": "probabilities", "axes": out_axes, "test_tensor": _file(files["test_output"]),
            "sample_tensor": _file(files["sample_output"]),
            "description": ("foreground probability (sigmoid)" if config.out_channels == 1
                            else "foreground probability and normalised distance to the object's boundary "
                                 "(a sigmoid each)" if config.output == "distance"
                            else "class probabilities (softmax over channels)"),
            "data": {"type": "float32", "range": [0.0, 1.0]}, "postprocessing": post,
        }],
        "weights": {
            "pytorch_state_dict": {
                **_file(files["state_dict"]), "pytorch_version": torch_version,
                "architecture": {"import_from": build_unet.__module__, "callable": build_unet.__name__,
                                 "kwargs": config.to_dict()},
                "dependencies": _file(files["environment"]),
                "comment": f"biounet {checkpoint.biounet_version} checkpoint, exported by biounet {__version__}",
            },
            "torchscript": {
                **_file(files["torchscript"]), "pytorch_version": torch_version, "parent": "pytorch_state_dict",
                "comment": "torch.jit.trace of the state dict's network; spatial sizes stay dynamic",
            },
            "onnx": {
                **_file(files["onnx"]), "opset_version": opset, "parent": "pytorch_state_dict",
                "comment": "torch.onnx.export with dynamic batch and spatial axes",
            },
        },
        "config": {
            "bioimageio": {
                "architecture_type": "3D U-Net" if config.spatial_dims == 3 else "U-Net",
                "architecture_description": _architecture_text(config),
                **({"modality": info.modality} if info.modality else {}),
                "target_structure": list(info.target_structure), "task": "segmentation",
                "model_parameter_count": sum(p.numel() for p in checkpoint.model.parameters()),
            },
            "biounet": _biounet_section(checkpoint),
        },
    }


def _file(path: Path) -> dict[str, str]:
    """A file entry: its name inside the package and its sha256 (which the loader checks)."""
    return {"source": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _biounet_section(checkpoint: Checkpoint) -> dict[str, Any]:
    """``config.biounet``: all that loading the package back needs besides the state dict."""
    meta: dict[str, Any] = {
        "model": checkpoint.config.to_dict(),
        "normalization": checkpoint.normalization.to_dict(),
        "class_names": list(checkpoint.class_names),
    }
    if checkpoint.instances is not None:
        meta["instances"] = checkpoint.instances.to_dict()
    meta["tta"] = checkpoint.tta.to_dict()
    if checkpoint.object_size is not None:
        meta["object_size"] = checkpoint.object_size.to_dict()
    # Plain-data extras (the training config, the chosen epoch's metrics) travel along; training state
    # (optimizer tensors, RNG states) does not: a package is for using a model, not for resuming training.
    extra = {k: v for k, v in checkpoint.extra.items() if k in ("train_config", "metrics") and _is_plain(v)}
    section: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                               "biounet_version": checkpoint.biounet_version, "checkpoint": meta}
    if extra:
        section["extra"] = extra
    return section


def _is_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _preprocessing(checkpoint: Checkpoint, ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """The checkpoint's normalisation in the spec's own operations, per sample and channel like biounet's."""
    norm = checkpoint.normalization
    # Percentiles and means of integer images are computed in float; cast first so that every consumer does.
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if norm.mode == "percentile":
        if norm.high <= 1.0:  # the spec's max_percentile must be > 1 (to catch fractions given for percents)
            raise BiounetError(f"percentile normalisation up to the {norm.high}th percentile cannot be "
                               "described in the BioImage Model Zoo spec (its max_percentile must exceed 1)")
        steps.append({"id": "scale_range", "kwargs": {
            "axes": list(ids), "min_percentile": float(norm.low), "max_percentile": float(norm.high)}})
    elif norm.mode == "zscore":
        steps.append({"id": "zero_mean_unit_variance", "kwargs": {"axes": list(ids)}})
    return steps


def _channel_names(count: int) -> list[str]:
    return ["gray"] if count == 1 else ["red", "green", "blue"] if count == 3 else [f"c{i}" for i in range(count)]


def _architecture_text(config: UNetConfig) -> str:
    residual = f", residual encoder ({list(config.blocks)} blocks per level)" if config.block == "residual" else ""
    return (f"{config.spatial_dims}D U-Net, {config.padding} convolutions, depth {config.depth}{residual}, "
            f"{config.base_channels} base channels, {config.upsample} up-sampling, norm {config.norm}; "
            f"input size min + n * {list(config.alignment)}, output = input - {list(config.halo_size())}")


def _clean_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name).strip() or "biounet model"
    return cleaned if len(cleaned) >= 5 else f"biounet {cleaned}"


def _description(card: str | None, checkpoint: Checkpoint) -> str:
    """The card's first paragraph (without Markdown code), or a sentence made from the config."""
    if card:
        for block in re.split(r"\n\s*\n", card):
            text = " ".join(line.strip() for line in block.splitlines() if not line.startswith("#")).strip()
            if text and not text.startswith("```"):
                text = text.replace("`", "")
                return text if len(text) <= 500 else text[:497].rsplit(" ", 1)[0] + "..."
    config = checkpoint.config
    return (f"{config.spatial_dims}D U-Net segmentation ({', '.join(checkpoint.class_names)}), trained with "
            f"biounet {checkpoint.biounet_version}.")


def _test_image(config: UNetConfig, image: np.ndarray | None) -> np.ndarray:
    """The raw ``(C, *spatial)`` image test tensors and the cover come from; synthetic if none is given."""
    if image is None:
        # Smooth blobs in 8-bit range: gives the network something to respond to, deterministically.
        from scipy import ndimage

        rng = np.random.default_rng(0)
        shape = (config.in_channels,) + (256 if config.spatial_dims == 2 else 64,) * config.spatial_dims
        noise = ndimage.gaussian_filter(rng.normal(size=shape), (0,) + (4,) * config.spatial_dims)
        noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-12)
        return (noise * 255).astype(np.float32)
    image = np.asarray(image)
    if image.ndim != config.spatial_dims + 1 or image.shape[0] != config.in_channels:
        raise BiounetError(f"test image has shape {image.shape}; the model needs (C={config.in_channels}, "
                           f"{config.spatial_dims} spatial axes)")
    return image.astype(np.float32)


def _crop(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The centre ``shape`` of ``image``'s spatial axes, mirror-padded where the image is smaller."""
    pads = [(0, 0)] + [(max(0, (s - have + 1) // 2), max(0, s - have - (s - have + 1) // 2))
                       for s, have in zip(shape, image.shape[1:], strict=True)]
    padded = np.pad(image, pads, mode="symmetric")
    starts = [(have - s) // 2 for s, have in zip(shape, padded.shape[1:], strict=True)]
    region = (slice(None),) + tuple(slice(b, b + s) for b, s in zip(starts, shape, strict=True))
    return np.ascontiguousarray(padded[region])


def _write_files(checkpoint: Checkpoint, folder: Path, image: np.ndarray, card: str | None, info: PackageInfo,
                 opset: int, synthetic: bool) -> dict[str, Path]:
    """Writes every file a package holds into ``folder``; returns their paths by role."""

    config = checkpoint.config
    model = UNet(config)
    # A standard-layout copy: the checkpoint's model is channels-last for biounet's own inference, which a
    # traced or exported graph would otherwise bake in.
    model.load_state_dict({k: v.contiguous() for k, v in checkpoint.model.state_dict().items()})
    model.eval()
    files = {role: folder / name for role, name in (
        ("state_dict", "weights.pt"), ("torchscript", "weights_torchscript.pt"), ("onnx", "weights.onnx"),
        ("test_input", "test_input.npy"), ("test_output", "test_output.npy"), ("cover", "cover.png"),
        ("sample_input", "sample_input.tif"), ("sample_output", "sample_output.tif"),
        ("documentation", "README.md"), ("environment", "environment.yaml"))}
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, files["state_dict"])

    # Test tensors: a small valid input (raw, as the spec wants it) and the probabilities for it.
    out_size = 64 if config.spatial_dims == 2 else 16
    in_shape = config.input_shape_for_output((out_size,) * config.spatial_dims)
    raw = _crop(image, in_shape)[None]
    normalised = checkpoint.normalization(raw[0])[None]
    with torch.inference_mode():
        expected = logits_to_probabilities(model(torch.from_numpy(normalised)), config.output).numpy()
    np.save(files["test_input"], raw.astype(np.float32))
    np.save(files["test_output"], expected.astype(np.float32))
    # The same as images for people (the spec's sample tensors: any format imageio reads, not .npy).
    import tifffile

    tifffile.imwrite(files["sample_input"], raw[0].astype(np.float32), photometric="minisblack")
    tifffile.imwrite(files["sample_output"], expected[0].astype(np.float32), photometric="minisblack")

    example = torch.from_numpy(normalised)
    with warnings.catch_warnings():
        # Tracing warns that shape arithmetic (the skip crops) becomes part of the graph: that is wanted,
        # and _check_traced below confirms the graph stays right at other sizes.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)  # type: ignore[no-untyped-call]
    _check_traced(model, traced, config)
    traced.save(str(files["torchscript"]))
    export_onnx(model, files["onnx"], tile=max(in_shape), opset=opset)

    _write_cover(checkpoint, model, image, files["cover"])
    files["documentation"].write_text(_documentation(checkpoint, card, info, synthetic), encoding="utf-8")
    environment = {
        "name": "biounet", "channels": ["conda-forge", "nodefaults"],
        "dependencies": ["python>=3.10", "pytorch>=2.4", "pip",
                         {"pip": [f"biounet>={__version__}"]}],
    }
    files["environment"].write_text(yaml.safe_dump(environment, sort_keys=False), encoding="utf-8")
    return files


def _check_traced(model: UNet, traced: Any, config: UNetConfig) -> None:
    """Fails if the traced network differs from the module at sizes other than the traced one."""
    for extra in (0, 1):
        size = tuple(m + extra * a for m, a in zip(config.valid_input_shape((1,) * config.spatial_dims),
                                                   config.alignment, strict=True))
        x = torch.rand(2 - extra, config.in_channels, *size)
        with torch.inference_mode():
            if not torch.allclose(model(x), traced(x), atol=1e-4, rtol=1e-4):
                raise BiounetError(f"the TorchScript trace of this model is wrong at input size {size}")


def _write_cover(checkpoint: Checkpoint, model: UNet, image: np.ndarray, path: Path) -> None:
    """Input and prediction side by side (2:1), by biounet's own overlap-tile prediction."""
    import imageio.v3 as iio


    config = checkpoint.config
    # 256^2 px in 2D; a 3D model predicts a 64^3 block and shows its middle plane (CPU time stays seconds).
    edge = 256 if config.spatial_dims == 2 else 64
    crop = _crop(image, (min(edge, max(image.shape[1:])),) * config.spatial_dims)
    probs = predict(model, crop, normalization=checkpoint.normalization)
    if config.spatial_dims == 3:  # the middle plane
        crop, probs = crop[:, crop.shape[1] // 2], probs[:, probs.shape[1] // 2]
    left = checkpoint.normalization(crop) if checkpoint.normalization.mode != "none" else crop
    if checkpoint.normalization.mode == "zscore":
        left = left / 6 + 0.5
    left = np.clip(left, 0, 1)
    left = np.repeat(left[:1], 3, 0) if left.shape[0] != 3 else left
    if probs.shape[0] == 1 or probs.shape[0] == 2:
        right = np.repeat(probs[-1:], 3, 0)
    else:  # classes 1, 2, 3 as red, green, blue (background left dark)
        right = np.zeros((3, *probs.shape[1:]), np.float32)
        right[: min(3, probs.shape[0] - 1)] = probs[1:4]
    both = np.concatenate([left, right], axis=2).transpose(1, 2, 0)
    iio.imwrite(path, (both * 255 + 0.5).astype(np.uint8))


def _documentation(checkpoint: Checkpoint, card: str | None, info: PackageInfo, synthetic: bool) -> str:
    """The package's README: the model card (or one made from the checkpoint) plus how it was packaged."""
    config = checkpoint.config
    if card is None:
        described = yaml.safe_dump(checkpoint.describe(), sort_keys=False)
        card = f"# {info.name}\n\n{info.description}\n\n## Configuration\n\n```yaml\n{described}```\n"
        train = checkpoint.extra.get("train_config")
        if isinstance(train, str):
            card += f"\n## Training configuration\n\n```yaml\n{train.rstrip()}\n```\n"
    halo = config.halo_size()
    norm = checkpoint.normalization
    norm_text = {"percentile": f"`scale_range` per image and channel from the {norm.low}th to the "
                               f"{norm.high}th percentile",
                 "zscore": "`zero_mean_unit_variance` per image and channel",
                 "none": "no intensity normalisation (the model was trained on raw values)"}[norm.mode]
    packaged = (
        "\n\n## BioImage Model Zoo package\n\n"
        f"Written by biounet {__version__}. Preprocessing: `ensure_dtype` float32, then {norm_text}, as biounet "
        "normalises each image. Postprocessing: "
        + (f"sigmoid, so the output holds the probability of {checkpoint.class_names[-1]}. "
           if config.out_channels == 1 else
           "sigmoid, so the output holds the foreground probability and each object pixel's distance to its "
           "object's boundary, normalised to 1 in each object's middle; biounet's seeded watershed turns them "
           "into objects. " if config.output == "distance" else
           "softmax over the channel axis, so the output holds the "
           f"probabilities of {', '.join(checkpoint.class_names)}. ")
        + (f"The network uses valid convolutions: its output is {list(halo)} pixels smaller than its input "
           "(half of it on each side), so tiles must overlap by that much, or use `biounet predict`, which "
           "mirrors the image at its border. " if config.padding == "valid" else "")
        + "Weights: PyTorch state dict (architecture `biounet.models.bioimageio.build_unet`, needs biounet "
        "installed), TorchScript and ONNX. The test input is a crop of "
        + ("a synthetic image (smooth noise), not microscopy" if synthetic else "an image given at export")
        + "; `biounet predict --model this.zip` uses the package like the checkpoint it came from.\n"
    )
    validation = ""
    if not re.search(r"#.*[vV]alidation", card):
        metrics = checkpoint.extra.get("metrics")
        shown = ("Recorded during training, at the chosen epoch: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()) + "."
            if isinstance(metrics, dict) else "The checkpoint stores no validation scores.")
        validation = (f"\n## Validation\n\n{shown} Score the model on your own annotated images with "
                      "`biounet evaluate`.\n")
    return card.rstrip() + "\n" + validation + packaged
