"""ONNX export of a U-Net, with dynamic batch and spatial sizes."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from biounet.atomic import atomic_path
from biounet.models.unet import UNet


def export_onnx(model: UNet, path: str | Path, tile: int | None = None, opset: int = 17) -> None:
    """Writes ``model`` as ONNX: input ``image`` (N, C, *spatial) -> output ``logits``.

    Batch and spatial sizes stay dynamic; any size valid for the model works at run time.

    Args:
        model: the network (exported in eval mode, on the CPU).
        path: destination ``.onnx`` file, written atomically.
        tile: spatial size of the example input used for tracing (a valid size near it is used).
        opset: ONNX opset version.
    """
    config = model.config
    dims = config.spatial_dims
    size = config.valid_input_shape(((tile or (188 if dims == 2 else 92)),) * dims)
    example = torch.zeros(1, config.in_channels, *size)
    axes = {0: "batch", **{2 + i: f"in_{i}" for i in range(dims)}}
    out_axes = {0: "batch", **{2 + i: f"out_{i}" for i in range(dims)}}
    model = model.eval().cpu()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of torch.export, which needs the extra
        # package onnxscript; both give the same graph for this network.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": axes, "logits": out_axes},
                          opset_version=opset)
