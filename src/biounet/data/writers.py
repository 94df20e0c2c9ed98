"""Writing probability maps and masks, atomically, in a format that matches the input.

Output names per input stem (see :func:`biounet.data.readers.file_stem`):

- NIfTI input: ``<stem>_prob.nii.gz`` (float32, classes on the 4th axis) and ``<stem>_mask.nii.gz``
  (uint8, uint16 beyond 256 classes), both with the input's header: affine, sform/qform codes, zooms, units.
- Other 3D input (TIFF stack, HDF5, zarr): ``<stem>_prob.tif`` (float32, axes ``CZYX``) and
  ``<stem>_mask.tif`` (ImageJ ``ZYX`` stack, uint8 or uint16, with the input's voxel size as calibration).
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
                     meta: ImageMeta) -> list[Path]:
    """Writes one input's probabilities and mask, named and formatted as the module docstring says.

    Args:
        out_dir: an existing directory.
        stem: the input's :func:`~biounet.data.readers.file_stem`.
        probabilities: ``(C, *spatial)`` class probabilities.
        mask: ``(*spatial)`` class indices.
        meta: the input's :class:`~biounet.data.readers.ImageMeta` (format, spacing, NIfTI header).

    Returns:
        The files written: probabilities first, then the mask.

    Raises:
        BiounetError: if the arrays do not match each other or the input's dimensions.
    """
    out_dir = Path(out_dir)
    spatial = probabilities.shape[1:]
    if mask.shape != spatial or len(spatial) != meta.spatial_dims:
        raise BiounetError(f"probabilities {probabilities.shape} and mask {mask.shape} do not fit a "
                           f"{meta.spatial_dims}D input", meta.path)
    classes = max(probabilities.shape[0], 2)
    mask_dtype = np.uint8 if classes <= 256 else np.uint16
    if meta.format == "nifti":
        # NIfTI has three spatial axes; a 2D input came from a file whose third axis is 1 long.
        volume = spatial + (1,) * (3 - len(spatial))
        prob_path, mask_path = out_dir / f"{stem}_prob.nii.gz", out_dir / f"{stem}_mask.nii.gz"
        write_nifti(prob_path, np.moveaxis(probabilities.astype(np.float32, copy=False), 0, -1).reshape(
            *volume, -1), meta.header, (0.0, 1.0))
        write_nifti(mask_path, mask.astype(mask_dtype).reshape(volume), meta.header, (0.0, classes - 1.0))
        return [prob_path, mask_path]
    prob_path = out_dir / f"{stem}_prob.tif"
    write_probabilities(prob_path, probabilities)
    if len(spatial) == 3:
        mask_path = out_dir / f"{stem}_mask.tif"
        write_mask_stack(mask_path, mask.astype(mask_dtype), meta.spacing)
        return [prob_path, mask_path]
    return [prob_path, write_mask(out_dir / f"{stem}_mask.png", mask)]


def write_probabilities(path: str | Path, probabilities: np.ndarray) -> None:
    """Writes ``(C, *spatial)`` probabilities as a float32 TIFF with axes metadata ``CYX`` or ``CZYX``."""
    import tifffile

    data = np.ascontiguousarray(probabilities, dtype=np.float32)
    axes = {3: "CYX", 4: "CZYX"}.get(data.ndim)
    if axes is None:
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


def write_mask_stack(path: str | Path, mask: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> None:
    """Writes a ``(Z, Y, X)`` class-index mask as an ImageJ TIFF stack calibrated with ``spacing``.

    Args:
        path: the ``.tif`` file.
        mask: uint8 or uint16 class indices (ImageJ has no other integer types).
        spacing: voxel size ``(z, y, x)``, stored as ImageJ's slice spacing and pixels per unit.
    """
    import tifffile

    if mask.ndim != 3 or mask.dtype not in (np.uint8, np.uint16):
        raise BiounetError(f"a mask stack must be uint8 or uint16 ZYX, got {mask.dtype} {mask.shape}", path)
    z, y, x = spacing
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, mask, imagej=True, resolution=(1.0 / x, 1.0 / y),
                         metadata={"axes": "ZYX", "spacing": z})
