"""training/: network shapes, degradation determinism, a 2-step training smoke test with a
safetensors resume, ONNX export fidelity (FP32/FP16/INT8 vs PyTorch), and the shipped manifest."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

# The training code degrades faces with OpenCV, which only the [train] extra installs (the app does
# not use it). `make test` runs this file again after installing that extra (`make test-train`).
cv2 = pytest.importorskip("cv2", reason="the training extra is not installed (pip install -e '.[train]')")

from training.degrade import (  # noqa: E402  (needs cv2, checked just above)
    TIERS,
    apply_degradation,
    make_pair,
    sample_degradation,
    sample_engine_tier_degradation,
    sample_tier_degradation,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pip install -e .[train])")


def astronaut_face(size: int = 512) -> np.ndarray:
    """The astronaut's face, roughly FFHQ-framed (face about half the crop), float32 RGB [0, 1]."""
    img = skdata.astronaut()[0:260, 95:355]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0


def astronaut_patches(count: int, size: int) -> list[np.ndarray]:
    img = skdata.astronaut().astype(np.float32) / 255.0
    return [
        np.ascontiguousarray(img[20 + 30 * i : 20 + 30 * i + size, 150 + 20 * i : 150 + 20 * i + size])
        for i in range(count)
    ]


# --- degradation (numpy only) ---


def test_degradation_is_deterministic_per_seed() -> None:
    face = astronaut_face(256)
    a_in, a_t = make_pair(face, np.random.default_rng(123))
    b_in, b_t = make_pair(face, np.random.default_rng(123))
    c_in, _ = make_pair(face, np.random.default_rng(124))
    assert a_in.tobytes() == b_in.tobytes()
    assert a_t.tobytes() == b_t.tobytes()
    assert a_in.tobytes() != c_in.tobytes()
    assert a_in.shape == face.shape and a_in.dtype == np.float32


def test_tiers_degrade_more_as_they_get_severe() -> None:
    face = astronaut_face(512)
    errors = [
        float(np.mean(np.abs(apply_degradation(face, TIERS[t], np.random.default_rng(0)) - face)))
        for t in ("mild", "medium", "severe")
    ]
    assert 0 < errors[0] < errors[1] < errors[2]


def test_tier_degradations_span_the_evaluation_tiers() -> None:
    rng = np.random.default_rng(5)
    ds = [sample_tier_degradation(rng) for _ in range(400)]
    scales = np.array([d.downscale for d in ds])
    noise = np.array([d.noise_sigma for d in ds])
    # The mild (x2) and severe (x8) tiers both lie inside the sampled ranges, with room around them.
    assert scales.min() < TIERS["mild"].downscale < TIERS["severe"].downscale < scales.max()
    assert noise.min() < TIERS["mild"].noise_sigma and noise.max() > TIERS["severe"].noise_sigma
    # Severity is shared: heavier downscaling comes with more noise.
    assert np.corrcoef(np.log(scales), noise)[0, 1] > 0.5
    assert any(d.motion_length > 0 for d in ds)


def test_engine_tiers_present_heavy_degradations_at_half_size_as_the_engine_does() -> None:
    """The engine restores faces that hold nothing finer than half their crop at 256 px, where an x8
    degradation is an x4 one with the same noise and JPEG: "engine-tiers" trains on that view."""
    tiers, engine = np.random.default_rng(7), np.random.default_rng(7)
    pairs = []
    for _ in range(400):
        plain = sample_tier_degradation(tiers)
        tiers.random()  # the routing draw, to keep the two generators in step
        pairs.append((plain, sample_engine_tier_degradation(engine)))
    light = [e for p, e in pairs if p.downscale < 4.0]
    assert light and all(e == p for p, e in pairs if p.downscale < 4.0)
    halved = [(p, e) for p, e in pairs if e != p]
    assert len(halved) > 40
    for p, e in halved:
        assert e.downscale == pytest.approx(max(1.0, p.downscale / 2))
        assert e.blur_sigma == pytest.approx(p.blur_sigma / 2)
        assert (e.noise_sigma, e.jpeg_quality) == (p.noise_sigma, p.jpeg_quality)
    assert max(e.downscale for _, e in pairs) < 8.5 < max(p.downscale for p, _ in pairs)


def test_sampled_degradations_cover_the_ranges() -> None:
    rng = np.random.default_rng(0)
    ds = [sample_degradation(rng) for _ in range(400)]
    assert min(d.downscale for d in ds) < 1.3 and max(d.downscale for d in ds) > 6.0
    assert {d.jpeg_quality for d in ds if d.jpeg_quality} <= set(range(30, 96))
    assert any(d.grayscale for d in ds) and not all(d.grayscale for d in ds)
    light = [sample_degradation(rng, light_fraction=1.0) for _ in range(50)]
    assert max(d.downscale for d in light) <= 2.0 and max(d.blur_sigma for d in light) <= 1.0


# --- the network ---


def test_patches_larger_than_the_hq_faces_are_the_whole_face_padded() -> None:
    from training.data import PatchSampler

    faces = astronaut_patches(2, 160)
    sampler = PatchSampler(face_files=[], hq_images=faces, patch=192)
    rng = np.random.default_rng(0)
    for _ in range(4):
        patch = sampler.sample(rng)
        assert patch.shape == (192, 192, 3)
        # Not resized: the 160 px face is there, whole, as it was (maybe mirrored).
        assert any(np.array_equal(patch[:160, :160], f) or np.array_equal(patch[:160, -160:][:, ::-1], f)
                   for f in faces)


def test_evaluation_scores_see_blur_noise_and_a_colour_cast() -> None:
    """training.evaluate's scores on the astronaut: each degradation moves its own score."""
    from training.evaluate import scores

    clean = astronaut_face(256)
    same = scores(clean, clean)
    assert same["detail"] == pytest.approx(1.0) and same["colour_shift"] == pytest.approx(0.0, abs=1e-4)
    blurred = scores(cv2.GaussianBlur(clean, (0, 0), 2.0), clean)
    assert blurred["detail"] < 0.7 and blurred["colour_shift"] < 0.5  # softer, same colours
    noisy = clean + np.random.default_rng(0).normal(0, 0.03, clean.shape).astype(np.float32)
    assert scores(noisy, clean)["colour_shift"] < 0.5 and scores(noisy, clean)["psnr"] < 35
    warm = np.clip(clean * np.array([1.06, 1.0, 0.92], np.float32), 0, 1)
    assert scores(warm, clean)["colour_shift"] > 2.0  # a cast a person would see


def test_evaluation_labels_keep_two_versions_of_one_model_apart() -> None:
    """Comparing shipped and candidate exports in one run gives each its own row."""
    from training.evaluate import model_labels

    shipped, candidate = Path("assets/models/restora-lite-int8.onnx"), Path("/tmp/v7/restora-lite-int8.onnx")
    other = Path("assets/models/gfpgan.onnx")
    labels = model_labels([shipped, candidate, other])
    assert labels == {"models/restora-lite-int8": shipped, "v7/restora-lite-int8": candidate, "gfpgan": other}
    with pytest.raises(ValueError, match="distinct"):
        model_labels([shipped, Path("elsewhere/models/restora-lite-int8.onnx")])


def test_content_sized_evaluation_runs_the_net_once_per_face_and_enlarged_faces_at_half_size() -> None:
    """`--content-sizes`: a sharp face reuses the full-size output, an enlarged one is restored at 256."""
    from training.evaluate import content_sized, remembering_last

    seen: list[int] = []

    def net(img: np.ndarray) -> np.ndarray:
        seen.append(img.shape[0])
        return img

    plain = remembering_last(net)
    by_content = content_sized(plain, (256, 512))
    sharp = astronaut_face(512)
    enlarged = cv2.resize(astronaut_face(64), (512, 512), interpolation=cv2.INTER_CUBIC)
    for face in (sharp, enlarged):
        assert plain(face) is face
        assert by_content(face).shape == (512, 512, 3)
    # The sharp face once; the enlarged one at 512, then at 256 as itself and mirrored.
    assert seen == [512, 512, 256, 256]


@needs_torch
def test_psnr_loss_is_the_mean_psnr_and_weighs_each_face_alike() -> None:
    """The PSNR loss is minus the mean of each face's PSNR, as the evaluation scores it: halving a
    lightly degraded face's error earns as much as halving a heavily degraded one's."""
    import torch

    from training.losses import psnr_loss, restoration_loss
    from training.train import psnr

    clean = np.stack(astronaut_patches(2, 64))
    rng = np.random.default_rng(0)
    sigmas = np.array([0.01, 0.08], np.float32)[:, None, None, None]
    noisy = np.clip(clean + sigmas * rng.standard_normal(clean.shape).astype(np.float32), 0, 1)
    out = torch.from_numpy(noisy.transpose(0, 3, 1, 2)).requires_grad_(True)
    target = torch.from_numpy(clean.transpose(0, 3, 1, 2))
    loss = psnr_loss(out, target)
    expected = -np.mean([psnr(noisy[i], clean[i]) for i in range(2)])
    assert loss.item() == pytest.approx(expected, abs=1e-3)
    loss.backward()
    assert out.grad is not None
    # The gradient's norm goes as 1 / error: the light face's is about 8 times the heavy one's
    # (under L1 both would be the same; under MSE the heavy face's would be 8 times the light one's).
    light, heavy = (out.grad[i].norm().item() for i in range(2))
    assert 5 < light / heavy < 12
    total, parts = restoration_loss(out, target, 0.3, 0.0, psnr_weight=0.01)
    assert total.item() == pytest.approx(0.01 * expected + 0.3 * (1 - parts["ssim"]), abs=1e-4)
    assert parts["neg_psnr"] == pytest.approx(expected, abs=1e-3)


@needs_torch
@pytest.mark.parametrize("size", [128, 512])
def test_network_keeps_the_shape_and_starts_as_identity(size: int) -> None:
    import torch

    from training.model import RestoraLite

    torch.manual_seed(0)
    model = RestoraLite().eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    # The residual head starts at zero, so an untrained net returns its input.
    assert torch.equal(y, x)
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    with torch.no_grad():
        assert not torch.equal(model(x), x)


@needs_torch
def test_pooled_network_keeps_the_shape() -> None:
    import torch

    from training.model import NetConfig, RestoraLite

    model = RestoraLite(NetConfig(widths=(8, 8, 16, 16), blocks=1, scale=2)).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and not torch.equal(y, x)


@needs_torch
def test_grown_network_starts_as_its_parent_on_a_real_face() -> None:
    import torch

    from training.model import RestoraLite, grow_blocks

    torch.manual_seed(0)
    parent = RestoraLite().eval()
    torch.nn.init.normal_(parent.tail.weight, std=0.05)  # a parent that changes its input
    face = astronaut_patches(1, 128)[0]
    x = torch.from_numpy(face).permute(2, 0, 1)[None].float()
    grown = grow_blocks(parent, 2, quarter=1).eval()
    assert grown.config.blocks == parent.config.blocks + 2 and len(grown.body) == len(parent.body) + 2
    assert grown.config.quarter_blocks == 1 and len(grown.quarter) == 1
    with torch.no_grad():
        expected = parent(x)
        assert not torch.equal(expected, x)
        assert torch.allclose(grown(x), expected, atol=1e-6)
        # The new blocks are real, trainable blocks: once their weights move, the output does.
        for block in (grown.body[-1], grown.quarter[0]):
            saved = block.conv2.weight.clone()
            torch.nn.init.normal_(block.conv2.weight, std=0.05)
            assert not torch.allclose(grown(x), expected, atol=1e-4)
            block.conv2.weight.copy_(saved)


@needs_torch
def test_dropping_a_block_keeps_the_others_weights_on_a_real_face() -> None:
    import torch

    from training.model import RestoraLite, drop_blocks

    torch.manual_seed(0)
    parent = RestoraLite().eval()
    torch.nn.init.normal_(parent.tail.weight, std=0.05)
    face = astronaut_patches(1, 128)[0]
    x = torch.from_numpy(face).permute(2, 0, 1)[None].float()
    smaller = drop_blocks(parent, [1]).eval()
    assert smaller.config.blocks == parent.config.blocks - 1 and len(smaller.body) == len(parent.body) - 1
    # The blocks after the dropped one move up a place, with their weights.
    assert torch.equal(smaller.body[1].conv1.weight, parent.body[2].conv1.weight)
    with torch.no_grad():
        full = parent(x)
        # Block 1 as the identity (its residual branch at zero): the parent is then the smaller net.
        torch.nn.init.zeros_(parent.body[1].conv2.weight)
        torch.nn.init.zeros_(parent.body[1].conv2.bias)
        assert not torch.allclose(parent(x), full, atol=1e-4)
        assert torch.allclose(smaller(x), parent(x), atol=1e-6)
    for bad in ([], [3], [-1]):
        with pytest.raises(ValueError, match="blocks to drop"):
            drop_blocks(parent, bad)


@needs_torch
def test_widened_network_starts_as_its_parent_and_learns_through_its_new_channels() -> None:
    import torch

    from training.model import NetConfig, RestoraLite, count_params, widen

    torch.manual_seed(0)
    parent = RestoraLite(NetConfig(widths=(16, 32, 64, 96), deep_relu=False, quarter_blocks=1)).eval()
    for conv in (parent.tail, parent.body[0].conv2, parent.quarter[0].conv2):
        torch.nn.init.normal_(conv.weight, std=0.05)  # a parent whose every path reaches the output
    wide = widen(parent, (24, 48, 96, 128)).eval()
    assert wide.config.widths == (24, 48, 96, 128)
    assert count_params(wide) == count_params(RestoraLite(wide.config))
    x = torch.from_numpy(astronaut_face(128).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        assert torch.allclose(wide(x), parent(x), atol=1e-5)
    wide.zero_grad()
    (wide(x) - x.flip(-1)).abs().mean().backward()
    # The consumers' weights for the new channels are zero but get gradients, so they open.
    assert float(wide.tail.weight.grad[:, 16:].abs().max()) > 0
    assert float(wide.up3.weight.grad[:, 96:].abs().max()) > 0
    with pytest.raises(ValueError, match="at least the parent"):
        widen(parent, (8, 32, 64, 96))


@needs_torch
def test_revived_deep_path_passes_gradients_where_the_dead_one_did_not() -> None:
    """v1-v4's up2 ReLU had died; revive_deep_path restarts the path below 1/2 resolution."""
    import torch

    from training.model import RestoraLite, deep_path_live, revive_deep_path

    torch.manual_seed(0)
    dead = RestoraLite().eval()
    torch.nn.init.normal_(dead.tail.weight, std=0.05)
    with torch.no_grad():
        dead.up2.bias.fill_(-100.0)  # what training had done to v4: up2 negative everywhere
    x = torch.from_numpy(astronaut_face(128).transpose(2, 0, 1)[None].copy())
    assert deep_path_live(dead, x) == 0.0

    def deep_gradient(model: RestoraLite) -> float:
        model.zero_grad()
        (model(x) - x.flip(-1)).abs().mean().backward()
        return max(
            float(p.grad.abs().max())
            for n, p in model.named_parameters()
            if n.startswith(("down2", "down3", "body", "up3", "up2")) and p.grad is not None
        )

    assert deep_gradient(dead) == 0.0
    revived = revive_deep_path(dead)
    assert not revived.config.deep_relu and deep_path_live(revived, x) == 1.0
    with torch.no_grad():
        assert torch.allclose(revived(x), dead(x), atol=1e-6)  # starts where the parent was
    assert deep_gradient(revived) > 0.0


@needs_torch
def test_dead_channels_are_revived_without_changing_the_output_where_they_have_one_consumer() -> None:
    """v5 had a third of its 1/8-resolution ResBlock channels dead; revive_dead_channels restarts them."""
    import torch

    from training.model import RestoraLite, channel_liveness, dead_channel_count, revive_dead_channels

    torch.manual_seed(0)
    model = RestoraLite().eval()
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    for block in model.body:  # give the blocks an output, so a changed channel would show
        torch.nn.init.normal_(block.conv2.weight, std=0.05)
    x = torch.from_numpy(astronaut_face(128).transpose(2, 0, 1)[None].copy())
    revive_dead_channels(model, x)  # a random net has a few dead channels of its own
    assert dead_channel_count(model, x) == 0
    with torch.no_grad():
        model.body[1].conv1.bias[[3, 7, 11]] = -100.0  # three dead channels, one consumer each
    assert dead_channel_count(model, x) == 3
    with torch.no_grad():
        before = model(x)
    assert revive_dead_channels(model, x, seed=1) == {"body.1.conv1": 3}
    live = channel_liveness(model, x)["body.1.conv1"]
    assert bool((live[[3, 7, 11]] > 0).all())  # they pass again, so they get gradients again
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6)  # conv2 ignores them until it learns
    model.zero_grad()
    (model(x) - x.flip(-1)).abs().mean().backward()
    assert float(model.body[1].conv2.weight.grad[:, [3, 7, 11]].abs().max()) > 0.0

    with torch.no_grad():
        model.head.bias[5] = -100.0  # a channel that also feeds a skip addition
        before = model(x)
    assert revive_dead_channels(model, x, seed=2) == {"head": 1}
    assert float(channel_liveness(model, x)["head"][5]) > 0
    with torch.no_grad():
        change = float((model(x) - before).abs().max())
    assert 0.0 < change < 0.05  # the skip sees it, at a tenth of the usual initial scale


# --- training smoke test and checkpoints ---


def smoke_sampler(patch: int):  # type: ignore[no-untyped-def]
    from training.data import PatchSampler, sharp_face_files

    if (SHARED_DATA / "train" / "manifest.csv").exists():
        return PatchSampler(face_files=sharp_face_files(SHARED_DATA)[:4], hq_images=[], patch=patch)
    return PatchSampler(face_files=[], hq_images=astronaut_patches(4, 160), patch=patch)


@needs_torch
def test_two_training_steps_then_resume(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from training.checkpoint import latest_checkpoint, load_meta
    from training.train import parse_args, train

    common = [
        "--name",
        "smoke",
        "--runs-dir",
        str(tmp_path),
        "--batch",
        "2",
        "--patch",
        "64",
        "--val-faces",
        "0",
        "--warmup",
        "1",
        "--widths",
        "8,8,16,16",
        "--blocks",
        "1",
        "--ema",
        "0.9",
    ]
    first = train(parse_args([*common, "--steps", "2"]), smoke_sampler(64))
    meta = load_meta(first)
    assert meta["step"] == 2
    tensors = load_file(str(first))
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in tensors)
    assert "ema.tail.weight" in tensors
    # Training moved the zero-initialised residual head.
    assert torch.count_nonzero(tensors["model.tail.weight"]) > 0

    second = train(parse_args([*common, "--steps", "3", "--resume", "auto"]), smoke_sampler(64))
    assert latest_checkpoint(tmp_path / "smoke") == second
    assert load_meta(second)["step"] == 3
    log = [json.loads(line) for line in (tmp_path / "smoke" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("event") == "start"] == [0, 2]


@needs_torch
def test_batches_are_the_same_made_here_or_by_worker_processes() -> None:
    """--workers only changes who makes a step's batch (a GPU run needs several processes to keep
    up): the same steps give the same pixels, and a resumed run at step 5 gets step 5's batch."""
    import torch

    from training.train import parse_args, step_batches

    args = parse_args(["--batch", "2", "--patch", "48", "--degradations", "tiers", "--device", "cpu"])
    sampler = smoke_sampler(48)

    def first_three(workers: int, start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        args.workers = workers
        batches = step_batches(sampler, args, start)
        taken = [next(batches) for _ in range(3)]
        batches.close()  # ends the worker processes
        return taken

    here, pooled, later = first_three(0, 3), first_three(2, 3), first_three(2, 5)
    for (x, y), (px, py) in zip(here, pooled, strict=True):
        assert x.shape == (2, 3, 48, 48) and torch.equal(x, px) and torch.equal(y, py)
    assert torch.equal(later[0][0], here[2][0]) and not torch.equal(here[0][0], here[1][0])


@needs_torch
def test_pooled_net_trains_on_degradations_scaled_to_its_resolution(tmp_path: Path) -> None:
    """A net that runs on 512 px faces pooled by 2 sees their blur and downscale halved: its
    training inputs (degradation scale 1/2) keep more of the target's detail than unscaled ones,
    and resuming a scale-1 checkpoint with --scale 2 gives a scale-2 net trained that way."""
    from training.checkpoint import load_meta
    from training.train import make_batch, parse_args, train

    def detail_kept(degradation_scale: float) -> float:
        x, y = make_batch(smoke_sampler(64), np.random.default_rng(7), 16, 0.0, "tiers",
                          degradation_scale=degradation_scale)
        grad = lambda t: np.abs(np.diff(t.numpy(), axis=3)).mean()  # noqa: E731
        return float(grad(x) / grad(y))

    assert detail_kept(0.5) > 1.1 * detail_kept(1.0)

    common = ["--runs-dir", str(tmp_path), "--batch", "2", "--patch", "64", "--val-faces", "0",
              "--warmup", "1", "--widths", "8,8,16,16", "--blocks", "1"]
    parent = train(parse_args(["--name", "native", *common, "--steps", "1"]), smoke_sampler(64))
    assert load_meta(parent)["net"]["scale"] == 1
    pooled = train(
        parse_args(["--name", "pooled", *common, "--steps", "1", "--resume", str(parent), "--weights-only",
                    "--scale", "2"]),
        smoke_sampler(64),
    )
    assert load_meta(pooled)["net"]["scale"] == 2
    start = json.loads((tmp_path / "pooled" / "log.jsonl").read_text().splitlines()[0])
    assert start["net"]["scale"] == 2 and start["args"]["degradation_scale"] == 0.5


@needs_torch
def test_training_with_worker_processes_saves_and_resumes(tmp_path: Path) -> None:
    from training.checkpoint import load_meta
    from training.train import parse_args, train

    common = ["--name", "workers", "--runs-dir", str(tmp_path), "--batch", "2", "--patch", "48", "--val-faces",
              "0", "--warmup", "1", "--widths", "8,8,16,16", "--blocks", "1", "--workers", "2", "--device", "cpu"]
    first = train(parse_args([*common, "--steps", "2"]), smoke_sampler(48))
    assert load_meta(first)["step"] == 2
    second = train(parse_args([*common, "--steps", "3", "--resume", "auto"]), smoke_sampler(48))
    assert load_meta(second)["step"] == 3
    start = json.loads((tmp_path / "workers" / "log.jsonl").read_text().splitlines()[0])
    assert start["device"] == "cpu" and start["args"]["workers"] == 2


@needs_torch
def test_gpu_pack_holds_the_sharpest_faces_and_the_same_validation_faces(tmp_path: Path) -> None:
    """training.pack, for a lent GPU machine (../shared does not travel): the sharpest faces up to its
    size, a manifest of those alone, train_hq, and the very validation faces a run at home scores."""
    if not (SHARED_DATA / "train" / "manifest.csv").exists():
        pytest.skip("../shared/data is absent")
    from training.data import read_manifest, sharp_face_files
    from training.pack import pack
    from training.train import validation_set

    result = pack(SHARED_DATA, tmp_path / "pack", max_mb=5.0, val_faces=2)
    assert result["val_faces"] == 2 and result["faces"] > 20 and result["mb"] <= 5.0
    rows = [r for r in read_manifest(SHARED_DATA / "train" / "manifest.csv") if r["near_gray"] != "1"]
    sharpest = sorted(rows, key=lambda r: float(r["laplacian_var"]), reverse=True)[: int(result["faces"])]
    packed = sharp_face_files(tmp_path / "pack", keep_fraction=1.0)
    names = [p.relative_to(tmp_path / "pack" / "train").as_posix() for p in packed]
    assert names == sorted(r["file"] for r in sharpest)
    for path, name in zip(packed, names, strict=True):
        assert path.read_bytes() == (SHARED_DATA / "train" / name).read_bytes()
    for (d_pack, c_pack), (d_home, c_home) in zip(validation_set(tmp_path / "pack", 2), validation_set(SHARED_DATA, 2),
                                                  strict=True):
        assert np.array_equal(d_pack, d_home) and np.array_equal(c_pack, c_home)
    assert len(list((tmp_path / "pack" / "train_hq").rglob("*.png"))) + len(
        list((tmp_path / "pack" / "train_hq").rglob("*.jpg"))) == result["hq_faces"]


def test_amp_and_cuda_are_refused_where_they_cannot_run() -> None:
    pytest.importorskip("torch")
    import torch

    from training.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--device", "cpu", "--amp", "bf16"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            parse_args(["--device", "cuda"])
        assert parse_args([]).device == "cpu"


@needs_torch
def test_revive_dead_run_logs_what_it_revived_and_trains_on(tmp_path: Path) -> None:
    """--revive-dead on a resumed net: the start record says how many channels per site restarted."""
    import torch
    from safetensors.torch import load_file, save_file

    from training.checkpoint import load_meta
    from training.train import parse_args, train

    common = ["--runs-dir", str(tmp_path), "--batch", "2", "--patch", "64", "--val-faces", "0"]
    common += ["--widths", "8,8,16,16", "--blocks", "1", "--ema", "0"]
    parent = train(parse_args(["--name", "parent", *common, "--steps", "1"]), smoke_sampler(64))
    tensors = load_file(str(parent))
    tensors["model.body.0.conv1.bias"] = torch.full_like(tensors["model.body.0.conv1.bias"], -100.0)
    save_file(tensors, str(parent))  # every inner channel of the 1/8 block dead, as training can leave it
    child = train(
        parse_args(
            ["--name", "child", *common, "--steps", "2", "--resume", str(parent), "--weights-only", "--revive-dead"]
        ),
        smoke_sampler(64),
    )
    start = json.loads((tmp_path / "child" / "log.jsonl").read_text().splitlines()[0])
    assert start["revived_channels"].get("body.0.conv1") == 16
    assert load_meta(child)["step"] == 2
    assert float(load_file(str(child))["model.body.0.conv1.bias"].max()) > -100.0

    wider = train(
        parse_args(
            [
                "--name",
                "wider",
                *common,
                "--steps",
                "1",
                "--resume",
                str(child),
                "--weights-only",
                "--widen",
                "8,16,16,24",
            ]
        ),
        smoke_sampler(64),
    )
    assert load_meta(wider)["net"]["widths"] == [8, 16, 16, 24]
    assert load_file(str(wider))["model.down3.weight"].shape == (24, 16, 3, 3)


@needs_torch
def test_averaged_checkpoint_holds_the_mean_of_two_runs_and_trains_on(tmp_path: Path) -> None:
    """training.average: two runs from one parent, averaged, load, evaluate and resume; other nets refused."""
    import torch
    from safetensors.torch import load_file

    from training.average import main as average
    from training.checkpoint import load_ema, load_meta, load_model
    from training.train import parse_args, train

    common = ["--runs-dir", str(tmp_path), "--batch", "2", "--patch", "48", "--val-faces", "0", "--warmup", "1"]
    common += ["--ema", "0.5"]
    net = ["--widths", "8,8,16,16", "--blocks", "1"]
    parent = train(parse_args(["--name", "parent", *common, *net, "--steps", "1"]), smoke_sampler(48))
    from_parent = ["--resume", str(parent), "--weights-only", "--lr", "1e-2"]
    runs = [
        train(
            parse_args(["--name", f"r{seed}", *common, *from_parent, "--steps", "2", "--seed", str(seed)]),
            smoke_sampler(48),
        )
        for seed in (1, 2)
    ]
    out = tmp_path / "soup" / "ckpt-0000000.safetensors"
    assert average([*map(str, runs), "--weights", "3,1", "--out", str(out)]) == 0
    emas = [load_ema(r) for r in runs]
    soup = load_ema(out)
    assert emas[0] is not None and emas[1] is not None and soup is not None
    key = "tail.weight"
    assert not torch.equal(emas[0][key], emas[1][key])  # the runs differ, so the mean is a new net
    assert torch.allclose(soup[key], 0.75 * emas[0][key] + 0.25 * emas[1][key], atol=1e-7)
    assert not any(k.startswith("optim.") for k in load_file(str(out)))
    assert load_meta(out)["base_steps"] == max(load_meta(r)["total_steps"] for r in runs)
    face = torch.from_numpy(astronaut_face(64).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        assert load_model(out)(face).shape == face.shape
    resumed = train(
        parse_args(["--name", "on", *common, "--steps", "1", "--resume", str(out), "--weights-only"]),
        smoke_sampler(48),
    )
    assert load_meta(resumed)["total_steps"] == load_meta(out)["base_steps"] + 1

    wider = ["--widths", "8,8,16,24", "--blocks", "1"]
    other = train(parse_args(["--name", "wide", *common, *wider, "--steps", "1"]), smoke_sampler(48))
    with pytest.raises(SystemExit):
        average([str(runs[0]), str(other), "--out", str(tmp_path / "bad.safetensors")])
    assert not (tmp_path / "bad.safetensors").exists()


@needs_torch
def test_gan_training_keeps_its_discriminator_across_a_resume(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from training.checkpoint import latest_checkpoint
    from training.train import parse_args, train

    common = ["--name", "gan", "--runs-dir", str(tmp_path), "--batch", "2", "--patch", "64", "--val-faces", "0"]
    common += ["--widths", "8,8,16,16", "--blocks", "1", "--degradations", "tiers"]
    common += ["--gan-weight", "0.01", "--fm-weight", "0.1"]
    first = train(parse_args([*common, "--steps", "2"]), smoke_sampler(64))
    disc_file = first.with_name(first.stem + ".disc.safetensors")
    assert disc_file.exists() and "score.bias" in load_file(str(disc_file))
    # The discriminator's file sits beside the checkpoint but is never taken for one.
    assert latest_checkpoint(tmp_path / "gan") == first
    second = train(parse_args([*common, "--steps", "3", "--resume", "auto"]), smoke_sampler(64))
    assert latest_checkpoint(tmp_path / "gan") == second
    log = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    assert any("g_adv" in r and "d" in r for r in log) or all("loss" not in r for r in log)


@needs_torch
def test_teacher_cache_holds_the_teachers_outputs_and_a_student_distills_from_it(tmp_path: Path) -> None:
    """A widened teacher's cached outputs and body features are what it computes on the cached inputs,
    and a student trained with both distillation terms moves towards the teacher (its L1 to the
    teacher output falls) and keeps its feature adapter across a resume."""
    import torch
    from safetensors.torch import load_file

    from training.checkpoint import load_meta, load_model
    from training.distill import build_cache, open_cache
    from training.train import parse_args, train

    common = ["--runs-dir", str(tmp_path), "--batch", "2", "--patch", "64", "--val-faces", "0"]
    common += ["--widths", "8,8,16,16", "--blocks", "1", "--degradations", "tiers", "--lr", "2e-3"]
    student0 = train(parse_args(["--name", "student0", *common, "--steps", "3"]), smoke_sampler(64))
    grow = ["--widen", "8,16,16,24", "--add-blocks", "1"]
    teacher_ckpt = train(
        parse_args(["--name", "teacher", *common, "--steps", "2", "--resume", str(student0), "--weights-only", *grow]),
        smoke_sampler(64),
    )
    cache = build_cache(teacher_ckpt, smoke_sampler(64), tmp_path / "cache", count=6, batch=4)
    assert not (tmp_path / "cache.part").exists()
    again = open_cache(tmp_path / "cache")
    assert len(again) == 6 and again.body.shape == (6, 24, 8, 8) and again.meta["teacher_net"]["blocks"] == 2
    teacher = load_model(teacher_ckpt)
    with torch.no_grad():
        out, body = teacher.native_with_body(torch.from_numpy(np.asarray(cache.inputs[4:6], dtype=np.float32)))
    assert np.abs(out.clamp(0, 1).numpy() - cache.outputs[4:6]).max() < 2e-3
    assert np.abs(body.numpy() - cache.body[4:6]).max() < 2e-2 * max(1.0, float(np.abs(body.numpy()).max()))

    distill = ["--name", "kd", *common, "--teacher-cache", str(tmp_path / "cache")]
    distill += ["--distill-weight", "1.0", "--feature-weight", "0.5", "--log-every", "1"]
    from_student0 = ["--resume", str(student0), "--weights-only"]
    first = train(parse_args([*distill, "--steps", "6", *from_student0]), smoke_sampler(64))
    adapter_file = first.with_name(first.stem + ".adapter.safetensors")
    assert load_file(str(adapter_file))["weight"].shape == (24, 16, 1, 1)
    log = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    kd = [r["kd"] for r in log if "kd" in r]
    assert len(kd) == 6 and all("feat" in r for r in log if "kd" in r)
    # The same batches without the teacher's terms: the distilled student ends nearer the teacher.
    plain_args = ["--name", "plain", *common, "--teacher-cache", str(tmp_path / "cache"), "--steps", "6"]
    plain = train(parse_args([*plain_args, "--resume", str(student0), "--weights-only"]), smoke_sampler(64))
    x = torch.from_numpy(np.asarray(cache.inputs[:], dtype=np.float32))
    t = torch.from_numpy(np.asarray(cache.outputs[:], dtype=np.float32))
    with torch.no_grad():
        gap = {p.parent.name: float((load_model(p, use_ema=False).native(x) - t).abs().mean()) for p in (first, plain)}
    assert gap["kd"] < gap["plain"], gap
    resumed = train(parse_args([*distill, "--steps", "7", "--resume", "auto"]), smoke_sampler(64))
    assert load_meta(resumed)["step"] == 7
    assert resumed.with_name(resumed.stem + ".adapter.safetensors").exists()
    with pytest.raises(SystemExit):
        parse_args(["--distill-weight", "1.0"])  # the teacher's terms need a cache


@needs_torch
def test_checkpoint_round_trip_restores_model_and_optimizer(tmp_path: Path) -> None:
    import torch

    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.model import NetConfig, RestoraLite

    torch.manual_seed(0)
    cfg = NetConfig(widths=(8, 8, 16, 16), blocks=1)
    model = RestoraLite(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = (model(torch.rand(1, 3, 32, 32)) - 0.5).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, opt, {"step": 2, "net": cfg.to_dict()})
    assert not list(tmp_path.glob("*.part"))

    model2 = RestoraLite(cfg)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=5.0)
    meta = load_checkpoint(path, model2, opt2)
    assert meta["step"] == 2
    for (k, v), v2 in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == pytest.approx(1e-3)
    for idx, state in s1["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2["state"][idx][key])), (idx, key)


# --- export ---


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("body_slope", [0.0, 0.05])  # ReLU, and the leaky 1/8-resolution activations
def test_onnx_variants_match_pytorch_on_a_real_face(tmp_path: Path, body_slope: float) -> None:
    import onnxruntime as ort
    import torch

    from training.export import export_fp16, export_fp32, export_int8, make_size_dynamic
    from training.model import NetConfig, RestoraLite

    torch.manual_seed(0)
    model = RestoraLite(NetConfig(widths=(8, 16, 16, 32), blocks=1, body_slope=body_slope)).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.02)
    face = astronaut_face(512)
    degraded = apply_degradation(face, TIERS["medium"], np.random.default_rng(0))
    x = degraded.transpose(2, 0, 1)[None].copy()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    residual = float(np.mean(np.abs(ref - x)))
    assert residual > 1e-3  # the check below would be vacuous for an identity net

    fp32, fp16, int8 = (tmp_path / f"m-{p}.onnx" for p in ("fp32", "fp16", "int8"))
    export_fp32(model, fp32)
    export_fp16(fp32, fp16)
    calib = [apply_degradation(face, TIERS[t], np.random.default_rng(1)) for t in TIERS]
    export_int8(model, int8, calib)

    def run(path: Path, batch: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["input"]
        assert [o.name for o in sess.get_outputs()] == ["output"]
        out: np.ndarray = sess.run(["output"], {"input": batch})[0]
        return out

    assert np.abs(run(fp32, x) - ref).max() < 1e-4
    assert np.abs(run(fp16, x) - ref).mean() < 2e-3
    int8_err = float(np.abs(run(int8, x) - ref).mean())
    assert int8_err < 0.25 * residual + 2e-3, (int8_err, residual)
    # Dynamic batch.
    assert run(fp32, np.concatenate([x, x])).shape == (2, 3, 512, 512)
    # Dynamic size, for the smaller crop sizes small faces are restored at: every variant, after the
    # same make_size_dynamic that export_all applies (which leaves the 512 px function as it was).
    small = x[:, :, ::2, ::2].copy()
    with torch.no_grad():
        ref_small = model(torch.from_numpy(small)).numpy()
    before = run(int8, x)
    for path in (fp32, fp16, int8):
        make_size_dynamic(path)
    assert np.array_equal(run(int8, x), before)
    assert np.abs(run(fp32, small) - ref_small).max() < 1e-4
    assert np.abs(run(fp16, small) - ref_small).mean() < 2e-3
    assert float(np.abs(run(int8, small) - ref_small).mean()) < 0.25 * residual + 2e-3

    # The layout that made INT8 fast here: the RGB tail is a 16-output conv (13 zero outputs sliced
    # off), the last upsampling is folded into a 1/2-resolution conv and a pixel shuffle (FoldedTail:
    # one Resize fewer than FP32's three), and the input is never quantized, so the 3-channel head
    # conv stays float.
    import onnx

    graph = onnx.load(str(int8)).graph
    tail_weight = next(init for init in graph.initializer if init.name.startswith("tail.weight"))
    assert tail_weight.dims[0] == 16
    ops = [node.op_type for node in graph.node]
    assert ops.count("Resize") == 2 and ops.count("DepthToSpace") == 1
    assert [node.op_type for node in onnx.load(str(fp32)).graph.node].count("Resize") == 3
    assert sorted(node.op_type for node in graph.node if "input" in node.input) == ["Add", "Conv"]
    leaky = [node for node in onnx.load(str(fp32)).graph.node if node.op_type == "LeakyRelu"]
    assert len(leaky) == (2 if body_slope else 0)  # down3 and the one ResBlock


@needs_torch
@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_folded_tail_computes_the_same_function_inside_the_outer_pixel_ring(upsample: str) -> None:
    import torch

    from training.model import FoldedTail, NetConfig, RestoraLite

    torch.manual_seed(0)
    model = RestoraLite(NetConfig(upsample=upsample)).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    torch.nn.init.normal_(model.tail.bias, std=0.01)
    x = torch.from_numpy(astronaut_face(128).transpose(2, 0, 1)[None].copy())
    folded = FoldedTail(model).eval()
    assert folded.tail.out_channels == 16 and folded.phase_tail.out_channels == 16
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert float((expected - x).abs().mean()) > 1e-3  # not the identity
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(got[inner], expected[inner], atol=1e-5)
    # Only the outer ring differs (zero padding of the upsampled features against edge replication
    # of the 1/2-resolution ones); the engine's paste-back mask is zero there.
    assert not torch.allclose(got, expected, atol=1e-5)


# --- the shipped model ---


def test_shipped_manifest_matches_its_files() -> None:
    manifest_path = REPO / "assets" / "models" / "restora.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["version"] == 1
    entries = manifest["models"]
    assert {e["precision"] for e in entries} == {"fp32", "fp16", "int8"}
    for e in entries:
        assert e["name"] == "restora-lite" and e["family"] == "restorer" and e["arch"] == "restora"
        assert (e["size"], e["template"], e["input"], e["output"]) == (512, "ffhq", "input", "output")
        assert e["crop_sizes"] == [256, 384]
        assert "non-commercial" in e["license"]
        path = manifest_path.parent / e["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == e["sha256"], path.name


# --- pruning (training/prune.py) ---


def random_small_net():  # type: ignore[no-untyped-def]
    import torch

    from training.model import NetConfig, RestoraLite

    torch.manual_seed(3)
    model = RestoraLite(NetConfig(widths=(8, 16, 24, 32), blocks=2)).eval()
    # The tail starts at zero (identity net); give it weights so every channel reaches the output.
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    return model


@needs_torch
def test_pruning_keeps_the_shape_and_removes_the_weakest_channels() -> None:
    import torch

    from training.model import count_params
    from training.prune import channel_scores, masked_model, prune_model

    model = random_small_net()
    pruned, keep = prune_model(model, 0.25)
    assert pruned.config.widths == (6, 12, 18, 24)
    # Widths shrink on both sides of each weight, so parameters shrink by about 1 - (1 - 0.25)^2.
    ratio = count_params(pruned) / count_params(model)
    assert abs(ratio - 0.75**2) < 0.05
    scores = channel_scores(model)
    for group, kept in keep.items():
        dropped = sorted(set(range(len(scores[group]))) - set(kept))
        assert dropped and float(scores[group][kept].min()) >= float(scores[group][dropped].max())
    x = torch.from_numpy(astronaut_face(128).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        y = pruned(x)
        assert y.shape == x.shape
        # The thin net computes what the full net computes with the dropped channels zeroed.
        torch.testing.assert_close(y, masked_model(model, keep)(x), atol=1e-5, rtol=0)
        assert not torch.allclose(y, model(x), atol=1e-4)


@needs_torch
def test_pruning_nothing_reproduces_the_net_and_saves_a_loadable_checkpoint(tmp_path: Path) -> None:
    import torch

    from training.checkpoint import load_model, save_checkpoint
    from training.prune import prune_model, save_pruned

    model = random_small_net()
    pruned, keep = prune_model(model, 0.0)
    assert pruned.config == model.config
    x = torch.from_numpy(astronaut_face(128).transpose(2, 0, 1)[None].copy())
    source = tmp_path / "ckpt-0000005.safetensors"
    save_checkpoint(source, model, None, {"step": 5, "net": model.config.to_dict()})
    save_pruned(tmp_path / "pruned-0000000.safetensors", pruned, source, 0.0, keep)
    reloaded = load_model(tmp_path / "pruned-0000000.safetensors")
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(pruned(x), expected)
        assert torch.equal(reloaded(x), expected)


def test_jpeg_blockiness_sees_heavy_jpeg_blocks() -> None:
    from training.data import jpeg_blockiness

    face = (astronaut_face(200) * 255).astype(np.uint8)
    gray = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 15])
    assert ok
    blocky = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    assert jpeg_blockiness(gray) < 1.15  # a clean face has no step at block edges
    assert jpeg_blockiness(blocky) > jpeg_blockiness(gray) + 0.2


@needs_torch
def test_face_scale_ground_truth_only_for_heavy_degradations() -> None:
    import torch

    from training.data import PatchSampler
    from training.train import make_batch

    # A 200 px face (UTKFace's size): enlarged to 512 px face scale for the x3+ degradations.
    sampler = PatchSampler(face_files=[], hq_images=[astronaut_face(200)], patch=64, hq_fraction=1.0)
    x, y = make_batch(sampler, np.random.default_rng(3), 6, 0.0, "tiers", face_scale_from=3.0)
    assert x.shape == y.shape == (6, 3, 64, 64)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    _, native = make_batch(sampler, np.random.default_rng(3), 6, 0.0, "tiers")
    edges = lambda t: float((t[..., 1:] - t[..., :-1]).abs().mean())  # noqa: E731
    assert edges(y) < edges(native)  # enlarged targets are smoother per pixel
    # Off by default: the same seed without the option gives the batches it always gave.
    a, _ = make_batch(sampler, np.random.default_rng(3), 2, 0.0, "tiers")
    b, _ = make_batch(sampler, np.random.default_rng(3), 2, 0.0, "tiers", face_scale_from=0.0)
    assert torch.equal(a, b)


@needs_torch
def test_validation_reports_the_ssim_gain_the_evaluation_would() -> None:
    """The training log's SSIM gain is skimage's SSIM on the central 80 %, as training.evaluate scores
    it: an untrained net (the identity) gains nothing, and a net that makes the face worse loses SSIM."""
    import torch
    from skimage import data
    from skimage.metrics import structural_similarity

    from training.evaluate import central_ssim
    from training.model import NetConfig, RestoraLite
    from training.train import validate

    clean = data.astronaut()[:256, 128:384].astype(np.float32) / 255.0
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    inner = (slice(26, 230), slice(26, 230))
    expected = structural_similarity(noisy[inner], clean[inner], channel_axis=2, data_range=1.0)
    assert central_ssim(noisy, clean) == pytest.approx(expected)
    assert central_ssim(clean, clean) == pytest.approx(1.0)

    identity = RestoraLite(NetConfig(widths=(8, 8, 16, 16), blocks=1))
    scores = validate(identity, [(noisy, clean)])
    assert scores["val_gain_db"] == pytest.approx(0.0, abs=1e-5)
    assert scores["val_ssim_gain"] == pytest.approx(0.0, abs=1e-6)
    # A net that brightens every pixel by 0.1 makes the face worse, and the log says so.
    with torch.no_grad():
        identity.tail.bias.fill_(0.1)
    worse = validate(identity, [(noisy, clean)])
    assert worse["val_gain_db"] < -3.0
    assert worse["val_ssim_gain"] < -0.01
