"""The same batch on a Ray cluster: long-lived worker actors, lazily listed inputs sent in chunks.

Why Ray Core actors rather than Ray Data's ``map_batches``: each worker must load its models once
and keep them (an actor does exactly that), a chunk is a list of file names rather than a table of
pixels (Ray Data would move decoded images through the object store, or need pyarrow for the
file lists), and retry policy is ours to choose: a chunk whose worker dies is split and retried
elsewhere, and a photo that takes a worker down twice is reported as an error instead of being
retried forever. The per-photo work is ``engine.batch.run_batch`` itself, so a photo comes out of
a cluster bit-identical to a local run with the same settings.

Outputs go straight from the workers to the output folder, which must be a path every node sees
(a NAS mount, a mounted bucket). The driver lists inputs lazily, plans output names (so names
never collide between chunks), keeps a bounded number of chunks in flight, and appends every
finished item to a JSON-lines report as it arrives, so a crash of the driver loses nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.batch import (
    BatchOptions,
    BatchProgress,
    BatchReport,
    InputItem,
    ItemResult,
    OutputPlanner,
    check_output_dir,
    count_inputs,
    describe_error,
    iter_inputs,
    run_batch,
)
from engine.errors import RestoraError
from engine.models import ModelStore
from engine.pipeline import CancelToken, Enhancer, EnhanceSettings, engine_info

WORKER_NAMESPACE = "restora"
CRASHED_TWICE = "the worker processing this photo crashed twice; it was not retried again"


class ClusterUnavailableError(RestoraError):
    """Ray is not installed, or the cluster cannot be reached (a usage error)."""


@dataclass(frozen=True)
class ClusterOptions:
    address: str = "auto"  # "auto": start a local Ray runtime; else a head address or ray://host:port
    workers: int | None = None  # worker actors; None: one per 2 CPUs of the cluster (at least 1)
    chunk_size: int = 16  # photos per task
    in_flight_per_worker: int = 2  # back-pressure: chunks queued per worker
    report_lines: Path | None = None  # JSON lines, one finished item each, appended as they arrive


@dataclass(frozen=True)
class Chunk:
    """Photos sent to one worker in one task, each with its index in the input order."""

    number: int
    entries: tuple[tuple[int, InputItem, Path], ...]  # (index, item, planned output)
    crashes: int = 0  # how many times a worker died while processing this chunk


@dataclass
class ChunkScheduler:
    """What to send next and what to do when a worker dies: pure logic, testable without Ray.

    A chunk whose worker died is split into single-photo chunks that carry the crash; a single
    photo whose worker dies again becomes an error item (``CRASHED_TWICE``).
    """

    chunks: Iterator[Chunk]
    retry: deque[Chunk] = field(default_factory=deque)
    exhausted: bool = False

    def next_chunk(self) -> Chunk | None:
        if self.retry:
            return self.retry.popleft()
        if self.exhausted:
            return None
        chunk = next(self.chunks, None)
        if chunk is None:
            self.exhausted = True
        return chunk

    @property
    def finished(self) -> bool:
        return self.exhausted and not self.retry

    def worker_died(self, chunk: Chunk) -> list[tuple[int, ItemResult]]:
        """Queue the retries for a chunk whose worker died; returns the items given up on."""
        if len(chunk.entries) > 1:
            for entry in chunk.entries:
                self.retry.append(Chunk(chunk.number, (entry,), crashes=chunk.crashes + 1))
            return []
        if chunk.crashes + 1 < 2:
            self.retry.append(Chunk(chunk.number, chunk.entries, crashes=chunk.crashes + 1))
            return []
        index, item, _ = chunk.entries[0]
        return [(index, ItemResult(str(item.path), None, "error", error=CRASHED_TWICE))]


def plan_chunks(
    paths: Sequence[Path], options: BatchOptions, chunk_size: int
) -> Iterator[Chunk]:
    """Lazily list the inputs, plan each output name, and group them in chunks."""
    planner = OutputPlanner(options)
    buffer: list[tuple[int, InputItem, Path]] = []
    number = 0
    for index, item in enumerate(iter_inputs(paths, options.recursive)):
        buffer.append((index, item, planner.plan(item)))
        if len(buffer) >= chunk_size:
            yield Chunk(number, tuple(buffer))
            number += 1
            buffer = []
    if buffer:
        yield Chunk(number, tuple(buffer))


class RestoraWorker:
    """A Ray actor body: loads the models once, then runs ``run_batch`` on chunk after chunk.

    Arguments travel as plain JSON-able dicts, so a Ray Client connection needs nothing of ours
    pickled beyond strings and numbers.
    """

    def __init__(self, settings: dict[str, Any], model_dirs: Sequence[str]) -> None:
        store = ModelStore.default(extra_dirs=tuple(Path(d) for d in model_dirs))
        self.enhancer = Enhancer(EnhanceSettings(**settings), store)

    def process(self, entries: list[tuple[int, str, str, str]], options: dict[str, Any]) -> list[list[Any]]:
        batch_options = BatchOptions(**{**options, "output_dir": Path(options["output_dir"])})
        items = [InputItem(Path(path), Path(relative)) for _, path, relative, _ in entries]
        outputs = [Path(output) for _, _, _, output in entries]
        report = run_batch(items, self.enhancer, batch_options, outputs=outputs)
        return [[index, result.to_dict()] for (index, *_), result in zip(entries, report.items, strict=True)]

    def pid(self) -> int:
        return os.getpid()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterUnavailableError(
            "--ray needs Ray: install the cluster extra with `pip install 'restora[cluster]'`"
        ) from None
    return ray


def connect(address: str) -> Any:
    """Start (``auto``) or join a Ray cluster; returns the ``ray`` module."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    try:
        if address == "auto":
            # "auto" in Restora's CLI means: start a runtime here (Ray's own "auto" means: find one).
            ray.init(include_dashboard=False, log_to_driver=False, namespace=WORKER_NAMESPACE)
        else:
            ray.init(address=address, log_to_driver=False, namespace=WORKER_NAMESPACE)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, ValueError...
        raise ClusterUnavailableError(f"cannot reach the Ray cluster at {address}: {error}") from None
    return ray


def _result_from_dict(data: dict[str, Any]) -> ItemResult:
    return ItemResult(
        input=data["input"], output=data.get("output"), status=data["status"], faces=data.get("faces", 0),
        seconds=data.get("seconds", 0.0), error=data.get("error"), warnings=list(data.get("warnings", [])),
    )


def run_on_ray(
    paths: Sequence[Path],
    settings: EnhanceSettings,
    options: BatchOptions,
    cluster: ClusterOptions,
    *,
    model_dirs: Iterable[Path] = (),
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: CancelToken | None = None,
) -> BatchReport:
    """Process every input on the cluster; returns the same report a local run gives."""
    started = time.perf_counter()
    ray = connect(cluster.address)
    check_output_dir(options.output_dir)
    total = count_inputs(paths, options.recursive)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    count = cluster.workers or max(1, cpus // 2)
    threads = max(1, cpus // count)
    # Load the models here once too: a missing or corrupt model is a usage error before any task,
    # and the report names what the workers use.
    info = engine_info(Enhancer(settings, ModelStore.default(extra_dirs=tuple(model_dirs))))
    settings_dict = {**asdict(settings), "threads": threads}
    options_dict = {**asdict(options), "output_dir": str(options.output_dir)}
    remote = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=0)(RestoraWorker)
    workers = [
        remote.options(name=f"restora-worker-{i}", lifetime=None).remote(settings_dict, [str(d) for d in model_dirs])
        for i in range(count)
    ]
    scheduler = ChunkScheduler(plan_chunks(paths, options, cluster.chunk_size))
    results: dict[int, ItemResult] = {}
    in_flight: dict[Any, tuple[int, Chunk]] = {}
    # One slot per chunk a worker may have queued: the back-pressure that bounds driver memory.
    slots: deque[int] = deque(i for _ in range(cluster.in_flight_per_worker) for i in range(count))
    faces = 0
    lines = cluster.report_lines.open("a", encoding="utf-8") if cluster.report_lines else None
    cancel = cancel or CancelToken()

    def record(index: int, result: ItemResult) -> None:
        nonlocal faces
        results[index] = result
        faces += result.faces
        if lines is not None:
            lines.write(json.dumps({"index": index, **result.to_dict()}, ensure_ascii=False) + "\n")
            lines.flush()
        if progress is not None:
            progress(BatchProgress(len(results), total, faces, time.perf_counter() - started, result))

    try:
        while not (scheduler.finished and not in_flight):
            cancel.raise_if_cancelled()
            while slots:
                chunk = scheduler.next_chunk()
                if chunk is None:
                    break
                worker = slots.popleft()
                payload = [(i, str(item.path), str(item.relative), str(out)) for i, item, out in chunk.entries]
                in_flight[workers[worker].process.remote(payload, options_dict)] = (worker, chunk)
            if not in_flight:
                continue
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in done:
                worker, chunk = in_flight.pop(ref)
                slots.append(worker)
                try:
                    finished = ray.get(ref)
                except ray.exceptions.RayActorError:
                    for index, result in scheduler.worker_died(chunk):
                        record(index, result)
                    continue
                except ray.exceptions.RayTaskError as error:
                    # run_batch isolates photo errors, so this is the chunk as a whole (e.g. an
                    # output that would overwrite an input): every photo in it gets the reason.
                    reason = describe_error(error.cause if error.cause is not None else error)
                    for index, item, _ in chunk.entries:
                        record(index, ItemResult(str(item.path), None, "error", error=reason))
                    continue
                for index, data in finished:
                    record(int(index), _result_from_dict(data))
    except BaseException:
        cancel.cancel()
        for worker_handle in workers:
            ray.kill(worker_handle)
        raise
    finally:
        if lines is not None:
            lines.close()
    for worker_handle in workers:
        ray.kill(worker_handle)
    items = [results[index] for index in sorted(results)]
    return BatchReport(info.model, info.detector, info.precision, info.provider,
                       time.perf_counter() - started, items, list(info.notes))


__all__ = [
    "CRASHED_TWICE",
    "Chunk",
    "ChunkScheduler",
    "ClusterOptions",
    "ClusterUnavailableError",
    "RestoraWorker",
    "connect",
    "plan_chunks",
    "run_on_ray",
]
