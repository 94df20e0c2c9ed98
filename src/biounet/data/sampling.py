"""Random training patches: the valid network's input tile around an output window, mirrored at borders."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from biounet.data.examples import Example, LazyExample
from biounet.models.config import Shape

# A patch as tensors: image (C, *in), target (*in) int64, weight (*in) float32, and the distance (*in) float32
# for the distance target (see biounet.data.examples.Patch).
TensorPatch = tuple[torch.Tensor, ...]


class PatchSampler:
    """Draws patches of the network's input size from a set of examples.

    The output window (where the loss is computed) is placed uniformly inside the image, or centred on a
    random foreground pixel with probability ``foreground_oversampling``. In a partly annotated image, a
    window that misses every annotated pixel (it would train on nothing) is centred on a random annotated
    pixel instead. The input patch extends half the halo beyond it, mirrored outside the image as at
    prediction time. Images are drawn in proportion to their pixel count (times their ``draw_weights``).
    Image, target and weight (and the distance, for the distance target) are all returned at the *input*
    size, so augmentation can deform them together before the targets are cropped to the output.

    Args:
        examples: the training images.
        input_shape: network input tile.
        output_shape: network output tile (``== input_shape`` for same models).
        foreground_oversampling: probability of centring a patch on a foreground pixel.
        draw_weights: a weight per example that its pixel count is multiplied by when drawing (e.g. to give
            a group of images a share of the patches); default: all 1.
    """

    def __init__(self, examples: Sequence[Example | LazyExample], input_shape: Shape, output_shape: Shape,
                 foreground_oversampling: float = 0.0, draw_weights: Sequence[float] | None = None) -> None:
        self.examples = examples
        self.input_shape, self.output_shape = input_shape, output_shape
        self.offset = tuple((o - i) // 2 for i, o in zip(input_shape, output_shape, strict=True))
        self.oversampling = foreground_oversampling
        sizes = torch.tensor([e.size for e in examples], dtype=torch.float64)
        if draw_weights is not None:
            sizes = sizes * torch.tensor(list(draw_weights), dtype=torch.float64)
        self.probabilities = sizes / sizes.sum()
        self.foreground = [e.foreground for e in examples]
        # Only in-memory examples can tell cheaply; a lazily read volume keeps the uniform draw.
        self.annotated = [e.partly_annotated if isinstance(e, Example) else np.empty(0, np.int64) for e in examples]

    def sample(self, batch: int, generator: torch.Generator) -> TensorPatch:
        """``(images (N, C, *in), targets (N, *in) int64, weights (N, *in) float32)`` (and ``distances (N,
        *in)`` float32 with the distance target), drawn one after another from ``generator``."""
        patches = [self.patch(generator) for _ in range(batch)]
        return tuple(torch.stack(parts) for parts in zip(*patches, strict=True))

    def patch(self, generator: torch.Generator) -> TensorPatch:
        """One ``(image (C, *in), target (*in) int64, weight (*in) float32)`` patch (and ``distance (*in)``
        float32 with the distance target) drawn from ``generator``."""
        index = int(torch.multinomial(self.probabilities, 1, generator=generator))
        example = self.examples[index]
        start = self._output_start(example, self.foreground[index], generator)
        if len(self.annotated[index]) and not self._annotated_in(example, start):
            start = self._centred(example.shape, self.annotated[index], generator)
        region = [(s + off, s + off + i) for s, off, i in zip(start, self.offset, self.input_shape, strict=True)]
        return tuple(torch.from_numpy(np.ascontiguousarray(part)) for part in example.patch(region))

    def _output_start(self, example: Example | LazyExample, foreground: np.ndarray,
                      generator: torch.Generator) -> Shape:
        shape = example.shape
        use_foreground = len(foreground) > 0 and float(torch.rand(1, generator=generator)) < self.oversampling
        if use_foreground:
            return self._centred(shape, foreground, generator)
        return tuple(int(torch.randint(max(n - o, 0) + 1, (1,), generator=generator))
                     for n, o in zip(shape, self.output_shape, strict=True))


    def _centred(self, shape: Shape, pixels: np.ndarray, generator: torch.Generator) -> Shape:
        """An output window centred on one of ``pixels`` (flat indices), drawn at random, inside the image."""
        flat = int(pixels[int(torch.randint(len(pixels), (1,), generator=generator))])
        centre = np.unravel_index(flat, shape)
        return tuple(int(min(max(c - o // 2, 0), max(n - o, 0)))
                     for c, o, n in zip(centre, self.output_shape, shape, strict=True))

    def _annotated_in(self, example: Example | LazyExample, start: Shape) -> bool:
        window = tuple(slice(s, s + o) for s, o in zip(start, self.output_shape, strict=True))
        return bool((example.weight[window] > 0).any()) if isinstance(example, Example) else True


class PatchDataset(torch.utils.data.Dataset[TensorPatch]):
    """The patches of a run by number: patch ``g`` is drawn with a generator seeded from ``(seed, g)``.

    Any process draws the same patch ``g`` (a DataLoader worker, another rank, a resumed run), so the data
    a run trains on depends on the seed and the step only, not on who reads it.

    Args:
        sampler: where patches come from.
        seed: the run's seed.
    """

    def __init__(self, sampler: PatchSampler, seed: int) -> None:
        self.sampler, self.seed = sampler, seed

    def __getitem__(self, number: int) -> TensorPatch:
        state = np.random.SeedSequence([self.seed, number]).generate_state(2, np.uint32)
        generator = torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))
        return self.sampler.patch(generator)


class StepBatches(torch.utils.data.Sampler[list[int]]):
    """The patch numbers of steps ``start``, ``start + 1``, ...: each step draws ``batch * world`` patches,
    and a rank takes its ``batch`` of them (rows ``rank * batch`` on), as one process would split them.

    Args:
        start: the first step (a resumed run's step counter).
        batch: patches per step on this rank.
        rank: this process's rank.
        world: number of ranks.
    """

    def __init__(self, start: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.batch, self.rank, self.world = start, batch, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            first = step * self.batch * self.world + self.rank * self.batch
            yield list(range(first, first + self.batch))
            step += 1
