"""Block-wise prediction into a zarr store: equal to one in-memory prediction, resumable, lazily read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from biounet.infer import predict
from biounet.infer.blocks import Block, block_tiles, plan_blocks
from biounet.infer.out_of_core import StoreRun, predict_to_store
from biounet.infer.predict import TileOptions, TilePredictor
from biounet.infer.tiling import plan_tiles
from biounet.io.axes import plan_stack
from biounet.io.items import ItemView
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.config import UNetConfig
from biounet.models.normalization import Normalization
from biounet.models.unet import UNet

zarr = pytest.importorskip("zarr")


def _checkpoint(path: Path, config: UNetConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = UNet(config)
    for module in model.modules():  # untrained batch norms would be identity; make them count
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    save_checkpoint(path, model, Normalization("percentile", 1.0, 99.0))
    return path


def _zarr_input(path: Path, image: np.ndarray, chunks: tuple[int, ...]) -> str:
    array = zarr.open_array(str(path), mode="w", shape=image.shape, chunks=chunks, dtype=image.dtype)
    array[...] = image
    return str(path)


def _stored(store: Path, name: str) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")[f"{name}/0"][...])


CONFIGS = {
    "2d-valid": (UNetConfig(base_channels=4, depth=2), (1, 203, 171), 48),
    "2d-same": (UNetConfig(base_channels=4, depth=2, padding="same", norm="batch"), (1, 150, 133), 40),
    "3d-valid": (UNetConfig(spatial_dims=3, base_channels=2, depth=2, norm="batch"), (1, 47, 39, 42), 12),
    "3d-same": (UNetConfig(spatial_dims=3, base_channels=2, depth=2, padding="same", norm="instance"),
                (1, 30, 37, 28), 12),
}


def _tile(config: UNetConfig) -> int:
    """A tile whose output is smaller than a block (several tiles per block) but not tiny: a valid U-Net of
    depth 2 gives 12 px from 52 (2D) and 8 from 48 (3D); its smallest tile, 44, gives 4 (1,320 tiles for the
    3D volume). Same padding: 44 (2D), 28 (3D)."""
    if config.padding == "valid":
        return 52 if config.spatial_dims == 2 else 48
    return 44 if config.spatial_dims == 2 else 28


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_blocks_equal_one_whole_prediction(name: str) -> None:
    config, shape, block = CONFIGS[name]
    image = np.random.default_rng(1).random(shape, np.float32)
    torch.manual_seed(0)
    model = UNet(config).eval()
    tile = _tile(config)
    whole = predict(model, image, tile=tile)
    predictor = TilePredictor(model, shape[1:], TileOptions(tile=tile))
    grid = plan_blocks(predictor.plan, block)
    assert len(grid) > 1
    stats = Normalization("none").fit(image)
    covered = np.zeros(shape[1:], np.int32)
    for b in grid:
        out = np.zeros((config.out_channels, *b.shape), np.float32)
        predictor.run(image, out, Normalization("none"), stats, b)
        np.testing.assert_allclose(out, whole[(slice(None), *b.slices())], atol=1e-5)
        covered[b.slices()] += 1
    assert (covered == 1).all()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_any_region_equals_the_whole_prediction(name: str) -> None:
    """A region of the output that no block grid made (a window a rescaled block is resampled from) is
    predicted from the plan's tiles that cover it, equal to the whole prediction there."""
    config, shape, _ = CONFIGS[name]
    rng = np.random.default_rng(7)
    image = rng.random(shape, np.float32)
    torch.manual_seed(0)
    model = UNet(config).eval()
    tile = _tile(config)
    whole = predict(model, image, tile=tile)
    predictor = TilePredictor(model, shape[1:], TileOptions(tile=tile))
    stats = Normalization("none").fit(image)
    for _ in range(6):
        start = tuple(int(rng.integers(0, n - 1)) for n in shape[1:])
        stop = tuple(int(rng.integers(a + 1, n + 1)) for a, n in zip(start, shape[1:], strict=True))
        region = Block((), start, stop)
        out = np.zeros((config.out_channels, *region.shape), np.float32)
        predictor.run(image, out, Normalization("none"), stats, region)
        np.testing.assert_allclose(out, whole[(slice(None), *region.slices())], atol=1e-5)


@pytest.mark.parametrize(("diameter", "size", "scale"), [(38, "38", "0.515x"), (10, "10", "1.96x"),
                                                         (40, "auto", "0.49x")])
def test_a_rescaled_store_equals_the_rescaled_tiff_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            diameter: int, size: str, scale: str) -> None:
    """--object-size with a zarr output: each block of the image's grid is resampled from the window of the
    rescaled prediction it needs, itself predicted from the rescaled image read window by window; the store
    holds what the TIFF outputs hold, probabilities, mask and objects alike, and says the scale."""
    from biounet.cli.main import main
    from conftest import discs

    image, _ = discs(diameter, shape=(260, 230), seed=4)
    tifffile.imwrite(tmp_path / "discs.tif", image[0])
    common = ["predict", "--model", "nuclei", str(tmp_path / "discs.tif"), "--object-size", size, "--tile", "124"]
    assert main([*common, "--out", str(tmp_path / "tiff"), "--out-format", "tiff"]) == 0
    assert main([*common, "--out", str(tmp_path / "out.zarr"), "--out-format", "zarr", "--block", "64"]) == 0
    tiff_line, zarr_line = capsys.readouterr().out.strip().splitlines()
    said = tiff_line[tiff_line.rindex(" (objects of"):]
    assert f"rescaled {scale}" in said and zarr_line.endswith(said) and "20 of 20 blocks computed" in zarr_line
    probs = tifffile.imread(tmp_path / "tiff" / "discs_prob.tif")
    np.testing.assert_allclose(_stored(tmp_path / "out.zarr", "prob"), probs, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(_stored(tmp_path / "out.zarr", "instances"),
                                  tifffile.imread(tmp_path / "tiff" / "discs_instances.tif"))


def test_an_enlarged_stack_s_objects_in_a_store_are_those_found_in_memory(tmp_path: Path) -> None:
    """Objects of a stack enlarged for the model: found on the enlarged grid (a second store, of the model's own
    prediction there), brought back by nearest pixel and numbered plane by plane, as in memory."""
    from biounet.cli.main import main
    from conftest import discs

    image, _ = discs(10, shape=(150, 170), seed=5)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([image[0], image[0][::-1, ::-1]]), metadata={"axes": "ZYX"})
    common = ["predict", "--model", "nuclei", str(tmp_path / "stack.tif"), "--object-size", "10", "--tile", "124"]
    assert main([*common, "--out", str(tmp_path / "tiff"), "--out-format", "tiff", "--outputs", "instances"]) == 0
    assert main([*common, "--out", str(tmp_path / "out.zarr"), "--out-format", "zarr", "--block", "64"]) == 0
    expected = tifffile.imread(tmp_path / "tiff" / "stack_instances.tif")
    assert expected[0].max() > 20 and expected[1].min(initial=1) == 0 and expected[1].max() > expected[0].max()
    np.testing.assert_array_equal(_stored(tmp_path / "out.zarr", "instances"), expected)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # the enlarged store is gone


def test_auto_measures_a_large_input_where_its_objects_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """An input too large to predict twice is measured on windows at its centre and around it, and the one
    with the most objects sets the scale: a slide whose nuclei (10 px) lie off its centre is enlarged for
    them, where its centre alone (background) would leave it as it is."""
    from biounet.infer import out_of_core
    from biounet.infer.out_of_core import auto_regions
    from biounet.pretrained import resolve_model
    from conftest import discs

    assert auto_regions((400, 400), 128) == [
        (slice(136, 264), slice(136, 264)), (slice(68, 196), slice(68, 196)), (slice(68, 196), slice(204, 332)),
        (slice(204, 332), slice(68, 196)), (slice(204, 332), slice(204, 332))]
    assert auto_regions((100, 400), 128) == [(slice(0, 100), slice(136, 264)), (slice(0, 100), slice(68, 196)),
                                             (slice(0, 100), slice(204, 332))]
    monkeypatch.setattr(out_of_core, "AUTO_REGION", {2: 128})
    canvas = np.full((1, 400, 400), 20, np.uint8)
    canvas[:, 266:332, 266:332] = discs(10, shape=(66, 66), seed=2)[0]  # in the last window only
    nuclei = load_checkpoint(resolve_model("nuclei"))
    stack = plan_stack("CYX", canvas.shape, 2, 3)
    scale, size = out_of_core._scale(nuclei, canvas, stack, TileOptions(object_size="auto"), Path("slide.tif"))
    assert size is not None and size == pytest.approx(10, rel=0.15) and scale > 1.5


def test_valid_blocks_share_no_tile() -> None:
    config = UNetConfig.paper()
    plan = plan_tiles(config, (2000, 1500), (572, 572))
    grid = plan_blocks(plan, 800)
    assert grid.block_shape == (768, 768)  # two tile steps of 384
    counts = [len(block_tiles(plan, b)) for b in grid]
    assert sum(counts) == len(plan)
    whole = plan_blocks(plan, 4000)  # larger than the image: one block, and the same when given back
    assert whole.block_shape == (2000, 1500) and plan_blocks(plan, whole.block_shape) == whole


@pytest.mark.parametrize("name", ["2d-valid", "3d-same"])
def test_store_equals_in_memory_prediction_and_resumes(tmp_path: Path, name: str) -> None:
    config, shape, block = CONFIGS[name]
    rng = np.random.default_rng(2)
    image = (rng.random(shape[1:]) * 1000).astype(np.uint16)
    source = _zarr_input(tmp_path / "in.zarr", image, tuple(max(8, s // 3) for s in image.shape))
    ckpt = _checkpoint(tmp_path / "m.pt", config)
    store = tmp_path / "out.zarr"
    tile = _tile(config)
    options = TileOptions(tile=tile)
    run = predict_to_store(source, ckpt, store, options=options, block=block)
    done, total = run.computed, run.total
    assert done == total > 1
    expected = predict(load_checkpoint(ckpt), image.astype(np.float32), tile=tile)
    np.testing.assert_allclose(_stored(store, "prob"), expected, atol=1e-5)
    assert (_stored(store, "mask") == expected.argmax(0)).all()
    # A run that died: two blocks unmarked (and one of them garbled) are the only ones computed again.
    record = zarr.open_group(str(store), mode="r+")["blocks"]
    flat = np.zeros(record.shape, np.uint8).ravel()
    flat[:] = 1
    flat[[0, -1]] = 0
    record[...] = flat.reshape(record.shape)
    zarr.open_group(str(store), mode="r+")["prob/0"][...] = 0
    again = predict_to_store(source, ckpt, store, options=options, block=block).computed
    assert again == 2
    rerun = _stored(store, "prob")
    blocks = list(plan_blocks(plan_tiles(config, image.shape, (tile,) * config.spatial_dims), block))
    for b in (blocks[0], blocks[-1]):
        region = (slice(None), *b.slices())
        np.testing.assert_allclose(rerun[region], expected[region], atol=1e-5)
    assert np.abs(rerun[(slice(None), *blocks[1].slices())]).max() == 0  # finished before: not recomputed
    # Finished: nothing to do; another model: the store is made anew.
    assert predict_to_store(source, ckpt, store, options=options, block=block).computed == 0
    other = _checkpoint(tmp_path / "other.pt", config, seed=5)
    assert predict_to_store(source, other, store, options=options, block=block).computed == total


def test_stack_of_rgb_planes_from_a_tiled_tiff(tmp_path: Path) -> None:
    """A 2D grey model on a Z stack of RGB planes stored as a tiled TIFF: read region by region, each plane
    normalised on its own, output in (C, Z, Y, X) with the input's voxel size."""
    rng = np.random.default_rng(3)
    stack = (rng.random((3, 70, 90, 3)) * 255).astype(np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, tile=(32, 32), photometric="rgb", metadata={"axes": "ZYXS"},
                     resolution=(2.0, 2.0), resolutionunit=tifffile.RESUNIT.NONE)
    ckpt = _checkpoint(tmp_path / "m.pt", UNetConfig(base_channels=4, depth=2))
    store = tmp_path / "stack.zarr"
    run = predict_to_store(str(path), ckpt, store, options=TileOptions(tile=44), block=32)
    done, total = run.computed, run.total
    assert done == total == 3 * 9
    checkpoint = load_checkpoint(ckpt)
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    for z in range(3):
        grey = (stack[z].astype(np.float32) * weights).sum(-1)
        np.testing.assert_allclose(_stored(store, "prob")[:, z], predict(checkpoint, grey, tile=44), atol=1e-5)
    attrs = zarr.open_group(str(store), mode="r")["prob"].attrs["multiscales"][0]
    assert [a["name"] for a in attrs["axes"]] == ["c", "z", "y", "x"]
    assert attrs["datasets"][0]["coordinateTransformations"][0]["scale"][2:] == [0.5, 0.5]


def test_item_view_reads_only_its_region() -> None:
    stored = np.arange(2 * 5 * 3 * 7, dtype=np.int32).reshape(2, 5, 7, 3)  # T, Y, X, C
    plan = plan_stack("TYXC", stored.shape, 2, 3)
    view = ItemView(stored, plan, (1,))
    assert view.shape == (3, 5, 7)
    np.testing.assert_array_equal(view[:, 1:4:2, 2:6], np.moveaxis(stored[1], -1, 0)[:, 1:4:2, 2:6])
    np.testing.assert_array_equal(view[1], stored[1, :, :, 1])


def test_cli_zarr_output_from_hdf5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h5py = pytest.importorskip("h5py")
    from biounet.cli.main import main

    volume = (np.random.default_rng(4).random((20, 33, 29)) * 4000).astype(np.uint16)
    with h5py.File(tmp_path / "vol.h5", "w") as handle:
        handle.create_dataset("raw", data=volume, chunks=(5, 11, 11))
    config = UNetConfig(spatial_dims=3, base_channels=2, depth=2, padding="same", norm="instance")
    ckpt = _checkpoint(tmp_path / "m.pt", config)
    args = ["predict", "--model", str(ckpt), f"{tmp_path / 'vol.h5'}:raw", "--out", str(tmp_path / "o"),
            "--out-format", "zarr", "--tile", "20", "--block", "16", "--prob-dtype", "uint8"]
    assert main(args) == 0
    assert "12 of 12 blocks computed" in capsys.readouterr().out
    expected = predict(load_checkpoint(ckpt), volume.astype(np.float32), tile=20)
    prob = _stored(tmp_path / "o" / "vol.zarr", "prob")
    assert prob.dtype == np.uint8 and np.abs(prob / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    assert main(args) == 0
    assert "0 of 12 blocks computed; 12 done by an earlier run" in capsys.readouterr().out
    assert main([*args, "--outputs", "prob,objects"]) == 2
    assert "need --out-format tiff" in capsys.readouterr().err
    named = [*args[:args.index("--out") + 1], str(tmp_path / "named.zarr"), *args[args.index("--out") + 2:]]
    assert main(named) == 0 and (_stored(tmp_path / "named.zarr", "prob") == prob).all()


def test_dask_equals_one_process_and_survives_a_killed_worker(tmp_path: Path) -> None:
    """Blocks computed on a 2-worker Dask cluster, one worker killed mid-run: the store still completes and
    equals the one made in this process."""
    distributed = pytest.importorskip("distributed")
    import os
    import signal
    import threading
    import time

    image = (np.random.default_rng(5).random((300, 280)) * 255).astype(np.uint8)
    source = _zarr_input(tmp_path / "in.zarr", image, (64, 64))
    ckpt = _checkpoint(tmp_path / "m.pt", UNetConfig(base_channels=8, depth=2))
    first = predict_to_store(source, ckpt, tmp_path / "one.zarr", options=TileOptions(tile=60), block=40)
    total = first.total
    assert first.computed == total >= 40
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        result: dict[str, StoreRun] = {}
        runner = threading.Thread(target=lambda: result.setdefault("run", predict_to_store(
            source, ckpt, tmp_path / "dask.zarr", options=TileOptions(tile=60), block=40,
            scheduler=cluster.scheduler_address)))
        runner.start()
        record = tmp_path / "dask.zarr" / "blocks"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                record.exists() and np.asarray(zarr.open_array(str(record), mode="r")[...]).sum() >= 3):
            time.sleep(0.05)
        os.kill(pids[0], signal.SIGKILL)
        at_kill = int(np.asarray(zarr.open_array(str(record), mode="r")[...]).sum())
        runner.join(120)
    assert 3 <= at_kill < total
    assert (result["run"].computed, result["run"].total) == (total, total)
    # Workers run torch with one thread, this process with more: summation orders differ in the last bit.
    np.testing.assert_allclose(_stored(tmp_path / "dask.zarr", "prob"), _stored(tmp_path / "one.zarr", "prob"),
                               atol=1e-5, rtol=0)
    assert (_stored(tmp_path / "dask.zarr", "mask") != _stored(tmp_path / "one.zarr", "mask")).mean() < 1e-4


@pytest.fixture(scope="module")
def cluster() -> object:
    distributed = pytest.importorskip("distributed")
    from biounet.infer.out_of_core import local_cluster

    with local_cluster(2) as running, distributed.Client(running):
        yield running


@pytest.mark.parametrize("name", ["2d-same", "3d-valid", "3d-same"])
def test_dask_equals_one_process_for_every_kind_of_model(tmp_path: Path, name: str, cluster: object) -> None:
    config, shape, block = CONFIGS[name]
    image = (np.random.default_rng(6).random(shape[1:]) * 255).astype(np.uint8)
    source = _zarr_input(tmp_path / "in.zarr", image, tuple(max(8, s // 2) for s in image.shape))
    ckpt = _checkpoint(tmp_path / "m.pt", config)
    tile = _tile(config)
    one = predict_to_store(source, ckpt, tmp_path / "one.zarr", options=TileOptions(tile=tile), block=block)
    dask = predict_to_store(source, ckpt, tmp_path / "dask.zarr", options=TileOptions(tile=tile), block=block,
                            scheduler=cluster.scheduler_address)  # type: ignore[attr-defined]
    assert one == dask and one.computed > 1
    np.testing.assert_allclose(_stored(tmp_path / "dask.zarr", "prob"), _stored(tmp_path / "one.zarr", "prob"),
                               atol=1e-5, rtol=0)
