"""Writing probability maps, masks and instance maps, atomically, in a format that matches the input.

Output names per input stem (see :func:`biounet.io.files.file_stem`):

- NIfTI input: ``<stem>_prob.nii.gz`` (float32, classes on the last axis), ``<stem>_mask.nii.gz`` (uint8,
  uint16 beyond 256 classes) and ``<stem>_instances.nii.gz`` (object ids, uint16, uint32 beyond 65535
  objects), all with the input's header: affine, sform/qform codes, zooms, units; the voxels keep the
  input's order (a volume predicted slice by slice by a 2D model too).
- Other stacks and volumes (TIFF, HDF5, zarr): ``<stem>_prob.tif`` (float32, axes ``CZYX``, or ``CTYX``,
  ``CTZYX`` for time series), ``<stem>_mask.tif`` (ImageJ ``ZYX``/``TYX``/``TZYX`` stack, uint8 or
  uint16, with the input's voxel size as calibration) and ``<stem>_instances.tif`` (the mask's axes and
  calibration; uint16 as an ImageJ stack, or uint32, which ImageJ cannot hold, as a plain TIFF with the
  axes and spacing in tifffile's metadata).
- 2D input: ``<stem>_prob.tif`` (float32, ``CYX``), ``<stem>_mask.png`` (uint8; ``.tif``, uint16, when a
  class index exceeds 255) and ``<stem>_instances.tif`` (``YX``, uint16 or uint32 as for stacks).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from biounet.atomic import atomic_path
from biounet.errors import BiounetError
from biounet.io.nifti import write_nifti
from biounet.io.readers import ImageMeta


def write_prediction(out_dir: str | Path, stem: str, probabilities: np.ndarray, mask: np.ndarray,
                     meta: ImageMeta, axes: str | None = None,
                     outputs: Collection[str] = ("prob", "mask")) -> list[Path]:
    """Writes one input's probabilities and mask, named and formatted as the module docstring says.

    Args:
        out_dir: an existing directory.
        stem: the input's :func:`~biounet.io.files.file_stem`.
        probabilities: ``(C, *axes)`` class probabilities.
        mask: ``(*axes)`` class indices.
        meta: the input's :class:`~biounet.io.readers.ImageMeta` (format, NIfTI header, and the spacing of
            the ``Z``, ``Y`` and ``X`` axes in the order ``axes`` has them).
        axes: the mask's axes, letters of ``TZYX`` in the input's order; default ``YX`` or ``ZYX`` (the
            ``spatial_dims`` of ``meta``).
        outputs: which of the two to write: ``"prob"``, ``"mask"`` or both.

    Returns:
        The files written: probabilities first, then the mask.

    Raises:
        BiounetError: if the arrays do not match each other or the input's dimensions.
    """
    out_dir = Path(out_dir)
    axes = _checked_axes(axes, mask.shape, meta)
    if mask.shape != probabilities.shape[1:]:
        raise BiounetError(f"probabilities {probabilities.shape} and mask {mask.shape} do not fit an input "
                           f"with axes {axes} and {meta.spatial_dims} spatial dimension(s)", meta.path)
    unknown = set(outputs) - {"prob", "mask"}
    if unknown:
        raise BiounetError(f"unknown prediction output(s) {', '.join(sorted(unknown))}; use prob, mask")
    classes = max(probabilities.shape[0], 2)
    mask_dtype = np.uint8 if classes <= 256 else np.uint16
    written: list[Path] = []
    if meta.format == "nifti":
        volume = _nifti_volume(mask.shape)
        if "prob" in outputs:
            written.append(out_dir / f"{stem}_prob.nii.gz")
            write_nifti(written[-1], np.moveaxis(probabilities.astype(np.float32, copy=False), 0, -1).reshape(
                *volume, -1), meta.header, (0.0, 1.0))
        if "mask" in outputs:
            written.append(out_dir / f"{stem}_mask.nii.gz")
            write_nifti(written[-1], mask.astype(mask_dtype).reshape(volume), meta.header, (0.0, classes - 1.0))
        return written
    prob_path = out_dir / f"{stem}_prob.tif"
    if mask.ndim == 2:
        if "prob" in outputs:
            write_probabilities(prob_path, probabilities)
            written.append(prob_path)
        if "mask" in outputs:
            written.append(write_mask(out_dir / f"{stem}_mask.png", mask))
        return written
    canonical, order = _imagej_order(axes)
    if "prob" in outputs:
        write_probabilities(prob_path, np.transpose(probabilities, (0, *(1 + i for i in order))), "C" + canonical)
        written.append(prob_path)
    if "mask" in outputs:
        mask_path = out_dir / f"{stem}_mask.tif"
        write_mask_stack(mask_path, np.transpose(mask, order).astype(mask_dtype), _zyx_spacing(axes, meta),
                         canonical)
        written.append(mask_path)
    return written


def write_instances(out_dir: str | Path, stem: str, instances: np.ndarray, meta: ImageMeta,
                    axes: str | None = None) -> Path:
    """Writes one input's instance map (object ids, 0 = background) beside its mask, as the module says.

    Args:
        out_dir: an existing directory.
        stem: the input's :func:`~biounet.io.files.file_stem`.
        instances: ``(*axes)`` non-negative integer ids.
        meta: the input's :class:`~biounet.io.readers.ImageMeta`, as for :func:`write_prediction`.
        axes: the map's axes, as for :func:`write_prediction`.

    Returns:
        The file written: ``<stem>_instances.nii.gz`` for NIfTI input, else ``<stem>_instances.tif``.

    Raises:
        BiounetError: if the map does not match the input's dimensions, has negative or non-integer ids,
            or an id beyond uint32.
    """
    out_dir = Path(out_dir)
    axes = _checked_axes(axes, instances.shape, meta)
    instances = np.asarray(instances)
    if not np.issubdtype(instances.dtype, np.integer):
        raise BiounetError(f"instance map must be integer, got {instances.dtype}", meta.path)
    if instances.size and instances.min() < 0:
        raise BiounetError("instance map has negative ids", meta.path)
    largest = int(instances.max(initial=0))
    if largest > np.iinfo(np.uint32).max:
        raise BiounetError(f"{largest} objects do not fit an instance map (at most {np.iinfo(np.uint32).max})",
                           meta.path)
    dtype = np.uint16 if largest <= np.iinfo(np.uint16).max else np.uint32
    if meta.format == "nifti":
        path = out_dir / f"{stem}_instances.nii.gz"
        write_nifti(path, instances.astype(dtype).reshape(_nifti_volume(instances.shape)), meta.header,
                    (0.0, float(largest)))
        return path
    path = out_dir / f"{stem}_instances.tif"
    canonical, order = _imagej_order(axes)
    write_label_tiff(path, np.transpose(instances, order).astype(dtype), _zyx_spacing(axes, meta), canonical)
    return path


def _checked_axes(axes: str | None, shape: tuple[int, ...], meta: ImageMeta) -> str:
    """``axes`` (default ``YX`` or ``ZYX``), checked against an output's shape and the input's dimensions."""
    axes = axes if axes is not None else "ZYX"[-meta.spatial_dims:]
    spatial_letters = [a for a in axes if a in "ZYX"]
    if (len(axes) != len(shape) or set(axes) - set("TZYX") or len(set(axes)) != len(axes)
            or len(spatial_letters) != meta.spatial_dims):
        raise BiounetError(f"an output of shape {tuple(shape)} does not fit an input with axes {axes} and "
                           f"{meta.spatial_dims} spatial dimension(s)", meta.path)
    return axes


def _nifti_volume(shape: tuple[int, ...]) -> tuple[int, ...]:
    # NIfTI has three spatial axes; a 2D input came from a file whose third axis is 1 long.
    return shape + (1,) * (3 - len(shape))


def _imagej_order(axes: str) -> tuple[str, list[int]]:
    """The axes in ``TZYX`` order, and the transpose that takes an array there."""
    # ImageJ (and most viewers) need the axes in TZYX order, whatever order the input had.
    canonical = "".join(sorted(axes, key="TZYX".index))
    return canonical, [axes.index(a) for a in canonical]


def _zyx_spacing(axes: str, meta: ImageMeta) -> tuple[float, float, float]:
    """The input's ``(z, y, x)`` voxel size; 1.0 for a missing ``Z``."""
    sizes = dict(zip([a for a in axes if a in "ZYX"], meta.spacing, strict=True))
    return sizes.get("Z", 1.0), sizes["Y"], sizes["X"]


def write_probabilities(path: str | Path, probabilities: np.ndarray, axes: str | None = None) -> None:
    """Writes ``(C, ...)`` probabilities as a float32 TIFF with axes metadata.

    Args:
        path: the ``.tif`` file.
        probabilities: classes first.
        axes: one letter per axis; default ``CYX`` or ``CZYX`` by the number of dimensions.
    """
    import tifffile

    data = np.ascontiguousarray(probabilities, dtype=np.float32)
    axes = axes if axes is not None else {3: "CYX", 4: "CZYX"}.get(data.ndim)
    if axes is None or len(axes) != data.ndim:
        raise BiounetError(f"cannot write probabilities of shape {data.shape}", path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, photometric="minisblack", metadata={"axes": axes})


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Writes a 2D class-index mask as PNG (uint8), or as TIFF (uint16) when a class index exceeds 255.

    Returns:
        The path written: ``path`` itself, or ``path`` with suffix ``.tif`` if the mask needed 16 bits.
    """
    target = Path(path)
    if int(mask.max(initial=0)) > 255:
        import tifffile

        target = target.with_suffix(".tif")
        with atomic_path(target) as tmp:
            tifffile.imwrite(tmp, mask.astype(np.uint16))
        return target
    import imageio.v3 as iio

    with atomic_path(target) as tmp:
        iio.imwrite(tmp, mask.astype(np.uint8))
    return target


def write_mask_stack(path: str | Path, mask: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
                     axes: str = "ZYX") -> None:
    """Writes a class-index mask stack as an ImageJ TIFF hyperstack calibrated with ``spacing``.

    Args:
        path: the ``.tif`` file.
        mask: uint8 or uint16 class indices (ImageJ has no other integer types).
        spacing: voxel size ``(z, y, x)``, stored as ImageJ's slice spacing and pixels per unit.
        axes: the mask's axes in ImageJ's order: ``ZYX``, ``TYX`` or ``TZYX``.
    """
    import tifffile

    if mask.ndim != len(axes) or axes not in ("ZYX", "TYX", "TZYX") or mask.dtype not in (np.uint8, np.uint16):
        raise BiounetError(f"a mask stack must be uint8 or uint16 ZYX, TYX or TZYX, got {mask.dtype} "
                           f"{mask.shape} as {axes}", path)
    z, y, x = spacing
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, mask, imagej=True, resolution=(1.0 / x, 1.0 / y),
                         metadata={"axes": axes, "spacing": z})


def write_label_tiff(path: str | Path, labels: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                     axes: str = "YX") -> None:
    """Writes an integer label map (object ids) as a TIFF calibrated with ``spacing``.

    uint16 becomes an ImageJ image or hyperstack (slice spacing and pixels per unit); uint32, which ImageJ
    cannot hold, a plain TIFF with the axes (and the ``Z`` spacing) in tifffile's metadata and the ``Y``/``X``
    pixel size as its resolution.

    Args:
        path: the ``.tif`` file.
        labels: uint16 or uint32 ids, axes in ImageJ's order.
        spacing: voxel size ``(z, y, x)``; ``z`` is ignored without a ``Z`` axis.
        axes: ``YX``, ``ZYX``, ``TYX`` or ``TZYX``.
    """
    import tifffile

    if labels.ndim != len(axes) or axes not in ("YX", "ZYX", "TYX", "TZYX") or labels.dtype not in (
            np.uint16, np.uint32):
        raise BiounetError(f"a label map must be uint16 or uint32 YX, ZYX, TYX or TZYX, got {labels.dtype} "
                           f"{labels.shape} as {axes}", path)
    z, y, x = spacing
    metadata: dict[str, object] = {"axes": axes}
    if "Z" in axes:
        metadata["spacing"] = z
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels, imagej=labels.dtype == np.uint16, resolution=(1.0 / x, 1.0 / y),
                         photometric="minisblack", metadata=metadata)
