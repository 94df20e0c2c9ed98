"""Devices for inference: parsing ``--device`` values, and a prepared copy of a model on one of them.

Prediction never touches the caller's model: a model being trained stays in training mode, on its device,
in its memory layout and with its batch norms; inference runs on a prepared copy.
"""

from __future__ import annotations

import copy
import re
from typing import cast

import torch

from biounet.errors import BiounetError
from biounet.infer.fusion import fold_batch_norm, has_foldable_batch_norm
from biounet.models.unet import UNet

_DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")
_DEVICE_FORMS = "cpu, cuda, cuda:N or mps"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for a ``--device`` value, checked to exist on this machine.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a ``torch.device`` of those types, or
            ``None`` for the CPU: a GPU is used only when asked for, never silently.

    Raises:
        BiounetError: for any other value, CUDA or MPS when this machine has none, or ``cuda:N`` beyond
            the number of CUDA devices.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        text = device.strip().lower()
        if not _DEVICE_PATTERN.fullmatch(text):
            raise BiounetError(f"unknown device {device!r}: use {_DEVICE_FORMS}")
        resolved = torch.device(text)
    else:
        resolved = device
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise BiounetError(f"device {resolved} was asked for, but no CUDA device is available")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise BiounetError(f"device {resolved} does not exist: this machine has {count} CUDA device(s) "
                               f"(cuda:0 to cuda:{count - 1})")
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise BiounetError("device mps was asked for, but Apple's MPS backend is not available here")
    elif resolved.type != "cpu":
        raise BiounetError(f"unsupported device {str(resolved)!r}: use {_DEVICE_FORMS}")
    return resolved


def parameter_device(model: torch.nn.Module) -> torch.device:
    """The device that ``model``'s parameters are on (the CPU for a model without parameters).

    Args:
        model: any module.
    """
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def prepare_model(model: UNet, device: torch.device) -> UNet:
    """A copy of ``model`` for inference on ``device``: eval mode, batch norms folded into their
    convolutions, no gradients, channels-last (oneDNN's and cuDNN's fastest layout). ``model`` itself keeps
    its mode, device, layout and layers.

    Args:
        model: the network; a model in training is fine.
        device: where the copy runs.
    """
    # Folding already works on a copy; a second deepcopy would only cost time and memory.
    prepared = cast(UNet, fold_batch_norm(model)) if has_foldable_batch_norm(model) else copy.deepcopy(model)
    prepared.eval()
    for parameter in prepared.parameters():
        parameter.grad = None
        parameter.requires_grad_(False)
    memory_format = torch.channels_last if model.config.spatial_dims == 2 else torch.channels_last_3d
    prepared.to(device=device)
    prepared.to(memory_format=memory_format)  # type: ignore[call-overload]
    return prepared
