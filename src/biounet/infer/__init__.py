"""Inference: from a model and images to probabilities, masks, objects and output files.

- ``tiling``: the tile plan, which tiles of which size cover an image;
- ``blending``: the Gaussian weights that blend overlapping tiles of ``same`` models;
- ``blocks``: the output cut into blocks that can be predicted anywhere and still equal one whole pass;
- ``tta``: test-time augmentation, the flips and rotations and their average;
- ``fusion``: batch norms folded into the convolutions before them, for inference;
- ``devices``: ``--device`` values, and a prepared copy of a model on one;
- ``predict``: overlap-tile prediction of one array (``predict``, ``TilePredictor``, ``TileOptions``);
- ``stack``: every item of a stored array (planes of a stack, volumes of a series), and one array segmented;
- ``instances``: objects from probabilities, for a whole image or block by block for a prediction store;
- ``objects``: the measurement table of an instance map;
- ``store``: the zarr prediction store, written block by block and resumable;
- ``out_of_core``: prediction larger than memory, block by block into a store, in one process or on Dask;
- ``files``: files in, outputs out: the workflow behind ``biounet predict``.
"""

from biounet.infer.predict import predict
from biounet.infer.tiling import TilePlan, plan_tiles

__all__ = ["TilePlan", "plan_tiles", "predict"]
