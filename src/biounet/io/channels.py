"""Adapting an image's channels to a model's, where that needs no guessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biounet.errors import BiounetError

#: ``(have, want)`` -> how :func:`match_channels` reads ``have`` channels for a model of ``want``: the one table
#: that the adaptation, the early check (:func:`can_match`) and the user's note (:func:`channels_note`) share.
ADAPTATIONS: dict[tuple[int, int], str] = {
    (3, 1): "a colour picture turned grey",
    (4, 1): "a colour picture turned grey (the fourth left out)",
    (4, 3): "red, green and blue (the fourth left out as alpha)",
    (1, 3): "grey repeated into red, green and blue",
}


def can_match(have: int, want: int) -> bool:
    """Whether :func:`match_channels` adapts ``have`` channels to a model of ``want``."""
    return have == want or (have, want) in ADAPTATIONS


def match_channels(image: np.ndarray, channels: int, path: str | Path | None = None) -> np.ndarray:
    """Adapts an image's channels to a model's (:data:`ADAPTATIONS`): RGB(A) to gray by luminance, RGBA to RGB
    by dropping alpha, gray to RGB by repeating it (a colour model trained on grey-as-RGB images, as
    fluorescence in DSB 2018).

    Args:
        image: ``(C, *spatial)``.
        channels: the model's input channels.
        path: the file, for messages.

    Raises:
        BiounetError: if the channels cannot be adapted without guessing.
    """
    have = image.shape[0]
    if not can_match(have, channels):
        raise BiounetError(f"image has {have} channel(s) but the model expects {channels}", path)
    if have == channels:
        return image
    if channels == 1:
        weights = np.array([0.299, 0.587, 0.114], np.float32).reshape(3, *([1] * (image.ndim - 1)))
        return (image[:3].astype(np.float32) * weights).sum(axis=0, keepdims=True)
    if have == 4:
        return image[:3]
    return np.repeat(image, 3, axis=0)


def channels_note(colour: bool | None, have: int, want: int) -> str | None:
    """What to tell the user when a model reads separate channels (stains) as a colour picture: ``None`` unless
    the file says that its ``have`` channels are separate (``colour is False``) and :func:`match_channels`
    takes them for RGB(A) for a model of ``want`` channels (they are then segmented as colours, not as stains).

    Args:
        colour: :attr:`~biounet.io.axes.StoredAxes.colour`.
        have: the channels read (1 when one is picked).
        want: the model's input channels.
    """
    if colour is not False or have not in (3, 4) or want not in (1, 3) or not can_match(have, want):
        return None
    read = "red, green and blue" if have == want else ADAPTATIONS[(have, want)]
    return (f"its {have} channels are separate channels, not a colour picture's, and the model reads them as "
            f"{read}; to segment one stain (a nuclear one, say), give --channel N (from 0)")
