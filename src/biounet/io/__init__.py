"""Reading and writing image files.

- ``axes``: :class:`StoredAxes` (one letter of ``TZCYX?`` per stored axis); ``plan_stack`` and ``image_plan``
  resolve them into ``(C, *spatial)`` items for a model.
- ``formats``: the per-format reader interface and the registry that maps a path or spec to its format.
- ``pillow``, ``tiff``, ``nifti``, ``containers``: one reader per format (PNG/JPEG, TIFF, NIfTI, HDF5/zarr);
  ``nifti`` also writes NIfTI, ``containers`` opens ``file.h5:dataset`` and ``store.zarr:array`` specs.
- ``stored``: a file's array as stored, through its format: ``probe_stored``, ``read_stored``, ``open_stored``.
- ``readers``: a file as one ``(C, *spatial)`` image: ``read_image``, ``read_image_meta``, ``guess_spatial_dims``.
- ``items``: ``ItemView``, one item of a stack as ``(C, *spatial)``, read region by region.
- ``channels``: ``match_channels``, an image's channels adapted to a model's.
- ``files``: file stems, folder listings, and input arguments expanded into image files.
- ``writers``: predictions, masks and instance maps written in a format that matches the input.
"""
