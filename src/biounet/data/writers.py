"""Writing probability maps and masks, atomically, in a format that matches the input.

Output names per input stem (see :func:`biounet.data.readers.file_stem`):

- NIfTI input: ``<stem>_prob.nii.gz`` (float32, classes on the last axis) and ``<stem>_mask.nii.gz``
  (uint8, uint16 beyond 256 classes), both with the input's header: affine, sform/qform codes, zooms, units;
  the voxels keep the input's order (a volume predicted slice by slice by a 2D model too).
- Other stacks and volumes (TIFF, HDF5, zarr): ``<stem>_prob.tif`` (float32, axes ``CZYX``, or ``CTYX``,
  ``CTZYX`` for time series) and ``<stem>_mask.tif`` (ImageJ ``ZYX``/``TYX``/``TZYX`` stack, uint8 or
  uint16, with the input's voxel size as calibration).
- 2D input: ``<stem>_prob.tif`` (float32, ``CYX``) and ``<stem>_mask.png`` (uint8; ``.tif``, uint16, when a
  class index exceeds 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biounet.atomic import atomic_path
from biounet.data.nifti import write_nifti
from biounet.data.readers import ImageMeta
from biounet.errors import BiounetError


def write_prediction(out_dir: str | Path, stem: str, probabilities: np.ndarray, mask: np.ndarray,
                     meta: ImageMeta, axes: str | None = None) -> list[Path]:
    """Writes one input's probabilities and mask, named and formatted as the module docstring says.

    Args:
        out_dir: an existing directory.
        stem: the input's :func:`~biounet.data.readers.file_stem`.
        probabilities: ``(C, *axes)`` class probabilities.
        mask: ``(*axes)`` class indices.
        meta: the input's :class:`~biounet.data.readers.ImageMeta` (format, NIfTI header, and the spacing of
            the ``Z``, ``Y`` and ``X`` axes in the order ``axes`` has them).
        axes: the mask's axes, letters of ``TZYX`` in the input's order; default ``YX`` or ``ZYX`` (the
            ``spatial_dims`` of ``meta``).

    Returns:
        The files written: probabilities first, then the mask.

    Raises:
        BiounetError: if the arrays do not match each other or the input's dimensions.
    """
    out_dir = Path(out_dir)
    axes = axes if axes is not None else "ZYX"[-meta.spatial_dims:]
    spatial_letters = [a for a in axes if a in "ZYX"]
    if (mask.shape != probabilities.shape[1:] or len(axes) != mask.ndim or set(axes) - set("TZYX")
            or len(spatial_letters) != meta.spatial_dims):
        raise BiounetError(f"probabilities {probabilities.shape} and mask {mask.shape} do not fit an input "
                           f"with axes {axes} and {meta.spatial_dims} spatial dimension(s)", meta.path)
    classes = max(probabilities.shape[0], 2)
    mask_dtype = np.uint8 if classes <= 256 else np.uint16
    if meta.format == "nifti":
        # NIfTI has three spatial axes; a 2D input came from a file whose third axis is 1 long.
        volume = mask.shape + (1,) * (3 - mask.ndim)
        prob_path, mask_path = out_dir / f"{stem}_prob.nii.gz", out_dir / f"{stem}_mask.nii.gz"
        write_nifti(prob_path, np.moveaxis(probabilities.astype(np.float32, copy=False), 0, -1).reshape(
            *volume, -1), meta.header, (0.0, 1.0))
        write_nifti(mask_path, mask.astype(mask_dtype).reshape(volume), meta.header, (0.0, classes - 1.0))
        return [prob_path, mask_path]
    prob_path = out_dir / f"{stem}_prob.tif"
    if mask.ndim == 2:
        write_probabilities(prob_path, probabilities)
        return [prob_path, write_mask(out_dir / f"{stem}_mask.png", mask)]
    # ImageJ (and most viewers) need the axes in TZYX order, whatever order the input had.
    canonical = "".join(sorted(axes, key="TZYX".index))
    order = [axes.index(a) for a in canonical]
    write_probabilities(prob_path, np.transpose(probabilities, (0, *(1 + i for i in order))), "C" + canonical)
    mask_path = out_dir / f"{stem}_mask.tif"
    sizes = dict(zip(spatial_letters, meta.spacing, strict=True))
    write_mask_stack(mask_path, np.transpose(mask, order).astype(mask_dtype),
                     (sizes.get("Z", 1.0), sizes["Y"], sizes["X"]), canonical)
    return [prob_path, mask_path]


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
