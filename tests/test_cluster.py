"""`restora enhance --ray`: the same batch on a real local Ray runtime, and the retry logic."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.batch import BatchOptions, InputItem, ItemResult
from engine.cli import Environment, ExitStatus, main
from engine.cluster import CRASHED_TWICE, Chunk, ChunkScheduler, ClusterOptions, plan_chunks, run_on_ray
from engine.pipeline import EnhanceSettings
from tests.helpers import write_jpeg


def run_cli(*argv: str | Path) -> tuple[ExitStatus, str]:
    err = io.StringIO()
    status = main([str(a) for a in argv], Environment(stdout=io.StringIO(), stderr=err))
    return status, err.getvalue()


def entry(index: int) -> tuple[int, InputItem, Path]:
    return index, InputItem(Path(f"in/{index}.jpg"), Path(f"{index}.jpg")), Path(f"out/{index}.jpg")


def test_a_dead_workers_chunk_is_split_and_a_photo_that_kills_twice_becomes_an_error() -> None:
    scheduler = ChunkScheduler(iter([Chunk(0, (entry(0), entry(1), entry(2)))]))
    chunk = scheduler.next_chunk()
    assert chunk is not None and len(chunk.entries) == 3
    assert scheduler.worker_died(chunk) == []
    singles = [scheduler.next_chunk() for _ in range(3)]
    assert [c.entries[0][0] for c in singles if c] == [0, 1, 2]
    assert all(c is not None and c.crashes == 1 for c in singles)
    culprit = singles[1]
    assert culprit is not None
    given_up = scheduler.worker_died(culprit)
    assert len(given_up) == 1
    index, result = given_up[0]
    assert index == 1 and isinstance(result, ItemResult)
    assert result.status == "error" and result.error == CRASHED_TWICE
    assert scheduler.next_chunk() is None and scheduler.finished


def test_a_single_photo_gets_one_retry() -> None:
    scheduler = ChunkScheduler(iter([Chunk(0, (entry(7),))]))
    chunk = scheduler.next_chunk()
    assert chunk is not None and scheduler.worker_died(chunk) == []
    retry = scheduler.next_chunk()
    assert retry is not None and retry.crashes == 1 and retry.entries[0][0] == 7


def test_chunks_are_planned_lazily_with_names_that_never_collide(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    small = np.ascontiguousarray(astronaut[::4, ::4])
    from PIL import Image as PILImage

    write_jpeg(folder / "a.jpg", small)
    write_jpeg(folder / "b.jpg", small)
    PILImage.fromarray(small).save(folder / "a.png")
    options = BatchOptions(output_dir=tmp_path / "out", format="png")
    chunks = list(plan_chunks([folder], options, chunk_size=1))
    outputs = [out.name for chunk in chunks for _, _, out in chunk.entries]
    assert len(chunks) == 3 and len(set(outputs)) == 3, outputs


@pytest.fixture(scope="module")
def ray_runtime():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray", reason="the cluster extra (Ray) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="restora")
    yield ray
    ray.shutdown()


@pytest.fixture()
def photos(tmp_path: Path, astronaut: np.ndarray) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(6):
        canvas = np.full((300, 400, 3), int(rng.integers(60, 200)), np.uint8)
        face = np.ascontiguousarray(astronaut[::2, ::2])
        y, x = int(rng.integers(0, 44)), int(rng.integers(0, 144))
        canvas[y : y + 256, x : x + 256] = face
        write_jpeg(folder / f"photo_{i}.jpg", canvas)
    return folder


def test_ray_run_is_bit_identical_to_a_local_run_and_resumes(ray_runtime, tmp_path: Path, photos: Path) -> None:  # type: ignore[no-untyped-def]
    status, err = run_cli("enhance", photos, "-o", tmp_path / "local", "--quiet")
    assert status == ExitStatus.OK, err
    status, err = run_cli("enhance", photos, "-o", tmp_path / "ray", "--ray", "auto", "--ray-workers", "2",
                          "--json", tmp_path / "r.json", "--quiet")
    assert status == ExitStatus.OK, err
    local = sorted((tmp_path / "local").iterdir())
    clustered = sorted((tmp_path / "ray").iterdir())
    assert [p.name for p in local] == [p.name for p in clustered] and len(local) == 6
    for a, b in zip(local, clustered, strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between a local and a Ray run"
    report = json.loads((tmp_path / "r.json").read_text())
    assert [Path(i["input"]).name for i in report["items"]] == [f"photo_{i}.jpg" for i in range(6)]
    assert all(i["status"] == "ok" and i["faces"] == 1 for i in report["items"])
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["status"] == "ok" for line in lines)
    status, err = run_cli("enhance", photos, "-o", tmp_path / "ray", "--ray", "auto", "--skip-existing",
                          "--json", tmp_path / "again.json", "--quiet")
    assert status == ExitStatus.OK, err
    assert {i["status"] for i in json.loads((tmp_path / "again.json").read_text())["items"]} == {"skipped"}


def test_a_worker_killed_mid_run_still_gets_every_photo_done(ray_runtime, tmp_path: Path, photos: Path) -> None:  # type: ignore[no-untyped-def]
    ray = ray_runtime
    killed = threading.Event()

    def kill_one_worker(_progress: object) -> None:
        if killed.is_set():
            return
        killed.set()
        pid = ray.get(ray.get_actor("restora-worker-0").pid.remote())
        os.kill(pid, signal.SIGKILL)

    report = run_on_ray([photos], EnhanceSettings(), BatchOptions(output_dir=tmp_path / "out"),
                        ClusterOptions(address="auto", workers=2, chunk_size=2), progress=kill_one_worker)
    assert killed.is_set()
    assert [item.status for item in report.items] == ["ok"] * 6
    for item in report.items:
        assert item.output is not None
        from PIL import Image as PILImage

        with PILImage.open(item.output) as image:
            image.load()  # complete and decodable


def test_without_ray_the_option_is_a_usage_error(tmp_path: Path, photos: Path) -> None:
    # In a child process with Ray hidden: in this one, the Ray runtime the other tests started runs a
    # thread that imports parts of Ray lazily, and hiding Ray under it made that thread fail.
    import subprocess
    import sys

    script = ("import sys; sys.modules['ray'] = None\n"
              "from engine.cli import main\n"
              "sys.exit(int(main(sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", script, "enhance", str(photos), "-o", str(tmp_path / "out"),
                           "--ray", "auto"], capture_output=True, text=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == ExitStatus.USAGE, done.stderr
    assert "restora[cluster]" in done.stderr
