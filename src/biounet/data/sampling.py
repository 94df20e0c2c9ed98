"""Random training patches: the valid network's input tile around an output window, mirrored at borders."""

from __future__ import annotations

import numpy as np
import torch

from biounet.data.dataset import Example
from biounet.geometry import read_mirrored
from biounet.models.config import Shape


class PatchSampler:
    """Draws patches of the network's input size from a set of examples.

    The output window (where the loss is computed) is placed uniformly inside the image, or centred on a
    random foreground pixel with probability ``foreground_oversampling``; the input patch extends half
    the halo beyond it, mirrored outside the image as at prediction time. Images are drawn in proportion
    to their pixel count. Image, target and weight are all returned at the *input* size, so augmentation
    can deform them together before the targets are cropped to the output.

    Args:
        examples: the training images.
        input_shape: network input tile.
        output_shape: network output tile (``== input_shape`` for same models).
        foreground_oversampling: probability of centring a patch on a foreground pixel.
    """

    def __init__(self, examples: list[Example], input_shape: Shape, output_shape: Shape,
                 foreground_oversampling: float = 0.0) -> None:
        self.examples = examples
        self.input_shape, self.output_shape = input_shape, output_shape
        self.offset = tuple((o - i) // 2 for i, o in zip(input_shape, output_shape, strict=True))
        self.oversampling = foreground_oversampling
        sizes = torch.tensor([e.target.size for e in examples], dtype=torch.float64)
        self.probabilities = sizes / sizes.sum()
        self.foreground = [e.foreground for e in examples]

    def sample(self, batch: int, generator: torch.Generator,
               keep: slice | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images (N, C, *in), targets (N, *in) int64, weights (N, *in) float32)``.

        Args:
            batch: patches to draw.
            generator: source of every random draw.
            keep: the patches to read of the ``batch`` drawn (one process's share in a distributed run); the
                others are drawn, so the generator advances alike in every process, but not read.
        """
        images, targets, weights = [], [], []
        wanted = range(batch)[keep or slice(None)]
        for k in range(batch):
            index = int(torch.multinomial(self.probabilities, 1, generator=generator))
            example = self.examples[index]
            start = self._output_start(example, self.foreground[index], generator)
            if k not in wanted:
                continue
            region = [(s + off, s + off + i) for s, off, i in zip(start, self.offset, self.input_shape, strict=True)]
            images.append(read_mirrored(example.image, region))
            targets.append(read_mirrored(example.target[None], region)[0])
            weights.append(read_mirrored(example.weight[None], region)[0])
        return (torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets)),
                torch.from_numpy(np.stack(weights)))

    def _output_start(self, example: Example, foreground: np.ndarray, generator: torch.Generator) -> Shape:
        shape = example.target.shape
        use_foreground = len(foreground) > 0 and float(torch.rand(1, generator=generator)) < self.oversampling
        if use_foreground:
            flat = int(foreground[int(torch.randint(len(foreground), (1,), generator=generator))])
            centre = np.unravel_index(flat, shape)
            return tuple(int(min(max(c - o // 2, 0), max(n - o, 0)))
                         for c, o, n in zip(centre, self.output_shape, shape, strict=True))
        return tuple(int(torch.randint(max(n - o, 0) + 1, (1,), generator=generator))
                     for n, o in zip(shape, self.output_shape, strict=True))
