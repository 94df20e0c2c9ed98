"""`make demo`: the prediction pipeline end to end on bundled ISBI 2012 slices.

Until training lands, the model is untrained (random He-initialised weights), so the masks are not
meaningful; what this shows is the pipeline: a self-describing checkpoint, overlap-tile prediction with
mirrored borders on 512x512 EM slices, and the output files.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from biounet.cli.main import main
from biounet.data.normalize import Normalization
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "demo_out"


def run() -> int:
    torch.manual_seed(0)
    OUT.mkdir(exist_ok=True)
    checkpoint = OUT / "untrained_base16.pt"
    save_checkpoint(checkpoint, UNet(UNetConfig(base_channels=16)), Normalization("percentile"),
                    ["membrane", "cell"])
    images = [str(REPO / "data" / "isbi2012" / "images" / f"{i:02d}.png") for i in range(25, 30)]
    start = time.perf_counter()
    code = main(["predict", "--model", str(checkpoint), *images, "--out", str(OUT / "predictions")])
    print(f"predicted {len(images)} slices in {time.perf_counter() - start:.1f} s; "
          f"outputs in {OUT / 'predictions'} (untrained model: the masks are placeholders until training)")
    return code


if __name__ == "__main__":
    raise SystemExit(run())
