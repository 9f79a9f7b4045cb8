"""Jobs: the queue, fair scheduling across connections, one worker per device that attacks the
faces of several photos in one batch, cancellation, and the result cache.

A connection is a `JobOwner`: the scheduler tells it, on the event loop, about its jobs' progress
and answers each job exactly once (`job_done` or `job_failed`), or never when the owner has gone.
The engine is synchronous and CPU/GPU-bound: each device has one worker thread that runs it, and
an asyncio task that feeds that thread, taking connections in turn (round robin) so that one
connection with many photos cannot starve the others.

Batches: the worker prepares queued photos one at a time (decode, detect: the engine's
`prepare`) in that fair order until their faces fill the device's face budget (or the queue is
empty), then attacks all their faces in one batch (`protect_prepared`). A photo that would
overflow the batch waits, prepared, for the next one. The first batch after the worker was idle
holds `first_batch_faces`, so the first photo of an album is back about as soon as it would be
alone. A photo's protection does not depend on its batch (lowkey_engine/batching.py).

Cancelling a running job: the engine reports progress between steps from the worker thread; the
progress callback raises `JobAborted` once the job is cancelled, its connection has gone or the
daemon is shutting down, and the engine takes that photo out of its batch at the next step while
the others go on.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Protocol, Sequence

import torch

import lowkey_engine.protect
from lowkey_engine.batching import DEFAULT_FACE_BUDGET, Batch, measure_face_budget
from lowkey_engine.images.errors import ImageError
from lowkey_engine.protect import Protected, get_engine, resolve_device
from lowkey_engine.runtime import use_idle_cores
from lowkey_engine.settings import ProtectSettings

from .config import ConfigError, DaemonConfig
from .protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

#: Progress stage sent when a job enters the queue (the engine's own stages follow).
QUEUED_STAGE = "queued"
SHUTTING_DOWN_MESSAGE = "the daemon is shutting down; send the photo again once it is back"
INTERNAL_MESSAGE = "the daemon failed to protect this photo (see the daemon's log)"



class Engine(Protocol):
    """What the scheduler needs of the engine (lowkey_engine.protect; tests give stand-ins): the
    two halves of protect(). A prepared photo has `face_count`, `pixel_count` and `batch_key()`."""

    def prepare(self, image: bytes, settings: ProtectSettings, progress: Callable[[str, int, int], None]) -> Any: ...

    def protect_prepared(self, photos: Sequence[Any]) -> list[Protected | Exception]: ...


@dataclass(eq=False)
class _Unprepared:
    """A photo handed to `SinglePhotoEngine`: nothing done yet, a batch of its own."""

    payload: bytes
    settings: ProtectSettings
    progress: Callable[[str, int, int], None]
    face_count: int = 1
    pixel_count: int = 0

    def batch_key(self) -> int:
        return id(self)


class SinglePhotoEngine:
    """An `Engine` from a plain protect(payload, settings, progress) -> Protected function: every
    photo is its own batch and all its work happens in `protect_prepared`. For stand-in engines
    (the tests, the fuzz harness) and for any engine that cannot batch."""

    def __init__(self, protect_function: Callable[..., Protected]):
        self._protect = protect_function

    def prepare(self, image: bytes, settings: ProtectSettings, progress: Callable[[str, int, int], None]
                ) -> _Unprepared:
        return _Unprepared(image, settings, progress)

    def protect_prepared(self, photos: Sequence[_Unprepared]) -> list[Protected | Exception]:
        outcomes: list[Protected | Exception] = []
        for photo in photos:
            try:
                outcomes.append(self._protect(photo.payload, photo.settings, photo.progress))
            except Exception as error:  # noqa: BLE001 - each photo's failure is its own answer
                outcomes.append(error)
        return outcomes


class JobOwner(Protocol):
    """Who asked for a job (a connection). Called on the event loop."""

    def job_progress(self, job: "Job", stage: str, done: int, total: int) -> None: ...

    def job_done(self, job: "Job", outcome: Protected, cached: bool) -> None: ...

    def job_failed(self, job: "Job", code: ErrorCode, message: str) -> None: ...


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"   # answered, or dropped because its owner has gone


class JobAborted(Exception):
    """Raised inside the engine's progress callback to stop a job that nobody waits for."""


@dataclass(eq=False)
class Job:
    id: str
    owner: JobOwner
    filename: str
    payload: bytes
    settings: ProtectSettings
    cache_key: tuple[str, str]
    state: JobState = JobState.QUEUED
    #: Set from the event loop, read by the worker thread.
    abort: threading.Event = field(default_factory=threading.Event)


@dataclass
class JobCounters:
    """Totals since start (for /v1/health, tests and benchmarks)."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    dropped: int = 0            # owner disconnected before the answer
    aborted_running: int = 0    # running jobs stopped between engine steps
    cache_hits: int = 0


def _resolve(device: str) -> str:
    try:
        return str(resolve_device(device))
    except RuntimeError as error:   # e.g. CUDA asked for, none present
        raise ConfigError(f"device {device!r}: {error}") from None


def cache_key(payload: bytes, preset: str) -> tuple[str, str]:
    """What identifies a result: the photo's content (SHA-256) and the preset."""
    return hashlib.sha256(payload).hexdigest(), preset


class ResultCache:
    """Protected photos by (content hash, preset), least recently used dropped first.

    max_bytes: total size of the cached protected images, bytes; 0 disables the cache."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], Protected] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str]) -> Protected | None:
        outcome = self._entries.get(key)
        if outcome is not None:
            self._entries.move_to_end(key)
        return outcome

    def put(self, key: tuple[str, str], outcome: Protected) -> None:
        size = len(outcome.data)
        if size > self.max_bytes or key in self._entries:
            return
        while self._bytes + size > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted.data)
        self._entries[key] = outcome
        self._bytes += size

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


class FairQueue:
    """Jobs waiting for a worker, handed out one connection at a time in turn."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[JobOwner, deque[Job]] = OrderedDict()
        self._count = 0
        self._bytes = 0
        self._closed = False
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return self._count

    @property
    def payload_bytes(self) -> int:
        return self._bytes

    def put(self, job: Job) -> None:
        self._waiting.setdefault(job.owner, deque()).append(job)
        self._count += 1
        self._bytes += len(job.payload)
        self._changed.set()

    async def get(self) -> Job | None:
        """The next job in fair order, waiting for one; None once the queue is closed."""
        while not self._closed and not self._waiting:
            self._changed.clear()
            await self._changed.wait()
        return self.get_nowait()

    def get_nowait(self) -> Job | None:
        """The next job in fair order; None when none is waiting or the queue is closed."""
        if self._closed or not self._waiting:
            return None
        owner, jobs = next(iter(self._waiting.items()))
        job = jobs.popleft()
        del self._waiting[owner]
        if jobs:
            self._waiting[owner] = jobs   # to the back of the line
        self._count -= 1
        self._bytes -= len(job.payload)
        return job

    def remove(self, job: Job) -> None:
        jobs = self._waiting.get(job.owner)
        if jobs is None or job not in jobs:
            return
        jobs.remove(job)
        if not jobs:
            del self._waiting[job.owner]
        self._count -= 1
        self._bytes -= len(job.payload)

    def close(self) -> None:
        self._closed = True
        self._waiting.clear()
        self._count = self._bytes = 0
        self._changed.set()


class JobScheduler:
    """Accepts jobs, enforces the queue limits, runs jobs in batches on one worker per device.

    engine: the engine's two halves of protect() (default lowkey_engine.protect; tests may pass
    stand-ins). warm: load every preset's models on every device in `start()` so the first photo
    is fast, and measure each device's face budget when the config leaves it at 0 (not warm: the
    default budget)."""

    def __init__(self, config: DaemonConfig, *, engine: Engine | ModuleType = lowkey_engine.protect,
                 warm: bool = True):
        self.config = config
        self.limits = config.limits
        self.presets = config.presets
        self.devices = list(dict.fromkeys(_resolve(name) for name in config.device))
        self.counters = JobCounters()
        self.cache = ResultCache(self.limits.cache_bytes)
        #: Faces an attack batch holds, per device (known once its worker has measured it).
        self.face_budgets: dict[str, int] = {}
        self._engine = engine
        self._warm = warm
        self._queue = FairQueue()
        self._active: dict[JobOwner, dict[str, Job]] = {}
        self._closed = False
        self._executors: list[ThreadPoolExecutor] = []
        self._workers: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for device in self.devices:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lowkey-{device}",
                                          initializer=self._init_worker_thread)
            self._executors.append(executor)
            if self._warm:
                await self._loop.run_in_executor(executor, self._load_models, device)
            self._workers.append(asyncio.create_task(self._work(device, executor),
                                                     name=f"lowkey-worker-{device}"))

    async def close(self) -> None:
        """Refuse new jobs, answer every queued and running job with `busy`, stop the workers.
        A running engine call stops at its next step; nothing here waits for it."""
        self._closed = True
        for owner_jobs in list(self._active.values()):
            for job in list(owner_jobs.values()):
                self._fail(job, ErrorCode.BUSY, SHUTTING_DOWN_MESSAGE)
        self._queue.close()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)

    def _init_worker_thread(self) -> None:
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)

    def _load_models(self, device: str) -> None:
        for settings in self.presets.values():
            get_engine(settings.replace(device=device))
        log.info("models loaded on %s for presets %s", device, ", ".join(self.presets))

    # ------------------------------------------------------------------ requests

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        """Jobs a worker has taken (preparing, waiting for their batch, or in it) and not answered."""
        return sum(job.state is JobState.RUNNING for jobs in self._active.values() for job in jobs.values())

    def jobs_in_flight(self, owner: JobOwner) -> int:
        """The owner's jobs queued or running (not yet answered)."""
        return len(self._active.get(owner, ()))

    def submit(self, owner: JobOwner, job_id: str, filename: str, payload: bytes,
               preset: str) -> Job:
        """Queue a photo (or answer it from the cache at once). Raises ProtocolError when it is
        refused: bad_request (duplicate id, unknown preset), too_large, busy."""
        if self._closed:
            raise ProtocolError(ErrorCode.BUSY, SHUTTING_DOWN_MESSAGE, job_id)
        active = self._active.setdefault(owner, {})
        if job_id in active:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "a job with this id is still in flight", job_id)
        if preset not in self.presets:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown preset {preset!r}; this daemon has "
                                f"{', '.join(self.presets)}", job_id)
        if len(payload) > self.limits.max_image_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"the file is larger than the limit of "
                                f"{self.limits.max_image_bytes} bytes", job_id)
        job = Job(job_id, owner, filename, payload, self.presets[preset], cache_key(payload, preset))
        hit = self.cache.get(job.cache_key)
        if hit is not None:
            self.counters.submitted += 1
            active[job_id] = job
            self._succeed(job, hit, cached=True)
            return job
        if len(active) >= self.limits.max_jobs_per_connection:
            raise ProtocolError(ErrorCode.BUSY, f"this connection already has "
                                f"{self.limits.max_jobs_per_connection} jobs in flight", job_id)
        if (len(self._queue) >= self.limits.max_queued_jobs
                or self._queue.payload_bytes + len(payload) > self.limits.max_queued_bytes):
            raise ProtocolError(ErrorCode.BUSY, "the daemon's queue is full; try again shortly", job_id)
        self.counters.submitted += 1
        active[job_id] = job
        self._queue.put(job)
        owner.job_progress(job, QUEUED_STAGE, 0, 1)
        return job

    def cancel(self, owner: JobOwner, job_id: str) -> bool:
        """Cancel a queued or running job (answered `cancelled` at once). False when the id is not
        in flight (it may have just finished: not an error)."""
        job = self._active.get(owner, {}).get(job_id)
        if job is None:
            return False
        self._fail(job, ErrorCode.CANCELLED, "cancelled by the client")
        return True

    def forget_owner(self, owner: JobOwner) -> None:
        """The owner has gone: drop its queued jobs, stop its running one, answer nothing."""
        for job in list(self._active.pop(owner, {}).values()):
            self.counters.dropped += 1
            self._take(job)

    # ------------------------------------------------------------------ answers

    def _take(self, job: Job) -> bool:
        """Mark the job answered and stop it wherever it is; False when it already was answered
        (or dropped because its owner has gone)."""
        if job.state is JobState.FINISHED:
            return False
        if job.state is JobState.QUEUED:
            self._queue.remove(job)
        job.state = JobState.FINISHED
        job.abort.set()
        self._active.get(job.owner, {}).pop(job.id, None)
        return True

    def _succeed(self, job: Job, outcome: Protected, cached: bool) -> None:
        if self._take(job):
            self.counters.completed += 1
            self.counters.cache_hits += cached
            log.info("job done: preset=%s faces=%d seconds=%.2f cached=%s",
                     job.settings.preset, outcome.face_count, outcome.seconds, cached)
            self._answer(job.owner.job_done, job, outcome, cached)

    def _fail(self, job: Job, code: ErrorCode, message: str) -> None:
        if self._take(job):
            if code is ErrorCode.CANCELLED:
                self.counters.cancelled += 1
            else:
                self.counters.failed += 1
            log.info("job failed: preset=%s code=%s", job.settings.preset, code)
            self._answer(job.owner.job_failed, job, code, message)

    @staticmethod
    def _answer(callback: Callable[..., None], job: Job, *outcome) -> None:
        """Hand a job's answer to its owner. An owner that fails to take it loses that answer
        (logged); the worker, which serves every connection, carries on."""
        try:
            callback(job, *outcome)
        except Exception:
            log.exception("answering job %r failed; the worker goes on", job.id)

    def _report(self, job: Job, stage: str, done: int, total: int) -> None:
        if job.state is JobState.RUNNING:
            job.owner.job_progress(job, stage, done, total)

    # ------------------------------------------------------------------ workers

    async def _work(self, device: str, executor: ThreadPoolExecutor) -> None:
        """Build batches from the queue in fair order and run them, until the queue closes."""
        budget = self.face_budgets[device] = await self._face_budget(device, executor)
        held: tuple[Job, Any] | None = None      # prepared, but it did not fit the last batch
        idle = True
        while True:
            limit = self.config.first_batch_faces if idle and self.config.first_batch_faces else budget
            batch, jobs = Batch(), []
            while True:
                if held is not None:
                    (job, photo), held = held, None
                    if job.state is JobState.FINISHED:           # answered while it waited
                        continue
                    if (hit := self.cache.get(job.cache_key)) is not None:   # its twin's result
                        self._succeed(job, hit, cached=True)
                        continue
                else:
                    job = await self._queue.get() if not jobs else self._queue.get_nowait()
                    if job is None:                              # the queue is empty, or closed
                        break
                    photo = await self._prepare(job, device, executor)
                    if photo is None:                            # answered already
                        continue
                twin = any(other.cache_key == job.cache_key for other in jobs)   # the same photo and preset
                if twin or not batch.admits(photo, limit, self.limits.batch_pixels):
                    held = (job, photo)
                    break
                batch.add(photo)
                jobs.append(job)
                if batch.faces >= limit:
                    break
            if not jobs:
                if self._closed:
                    return
                continue
            await self._attack(jobs, batch.photos, device, executor)
            idle = held is None and not len(self._queue)

    async def _face_budget(self, device: str, executor: ThreadPoolExecutor) -> int:
        """The configured face budget, else one measured on `device` (warm) or the default."""
        if self.config.face_budget or not self._warm:
            return self.config.face_budget or DEFAULT_FACE_BUDGET
        settings = self.presets[self.config.preset].replace(device=device)
        try:
            return await self._loop.run_in_executor(executor, measure_face_budget, settings)
        except Exception:
            log.exception("measuring the face budget on %s failed; using %d", device, DEFAULT_FACE_BUDGET)
            return DEFAULT_FACE_BUDGET

    async def _prepare(self, job: Job, device: str, executor: ThreadPoolExecutor) -> Any | None:
        """Take `job` from the queue: answer it from the cache, or prepare its photo in the worker
        thread. The prepared photo, or None when the job is answered already (a cache hit, a photo
        that failed to decode, was cancelled, or has no face and was finished at once)."""
        hit = self.cache.get(job.cache_key)   # a duplicate that queued behind its twin
        if hit is not None:
            self._succeed(job, hit, cached=True)
            return None
        job.state = JobState.RUNNING
        try:
            photo = await self._loop.run_in_executor(executor, self._prepare_in_worker, job, device)
            if photo.face_count == 0:
                (outcome,) = await self._loop.run_in_executor(executor, self._engine.protect_prepared, [photo])
                self._settle(job, outcome)
                return None
        except Exception as error:  # noqa: BLE001 - each kind of failure has its answer in _settle
            self._settle(job, error)
            return None
        return photo

    def _prepare_in_worker(self, job: Job, device: str) -> Any:
        """In the device's worker thread: decode and detect, with a progress callback that
        reports to the job's owner and stops the job once it is cancelled."""
        loop = self._loop

        def progress(stage: str, done: int, total: int) -> None:
            if job.abort.is_set():
                raise JobAborted
            loop.call_soon_threadsafe(self._report, job, stage, done, total)

        settings = job.settings.replace(device=device, max_pixels=self.limits.max_pixels,
                                        max_bytes=self.limits.max_image_bytes)
        return self._engine.prepare(job.payload, settings, progress)

    async def _attack(self, jobs: list[Job], photos: list[Any], device: str, executor: ThreadPoolExecutor) -> None:
        """Attack the photos' faces in one batch and answer every job. Should the batch as a whole
        fail, each photo is tried again alone, so one bad photo cannot take the others with it."""
        try:
            outcomes = await self._loop.run_in_executor(executor, self._protect_batch, photos, device)
        except Exception as error:
            if len(photos) == 1:
                outcomes = [error]
            else:
                log.exception("a batch of %d photos failed on %s; each is tried alone", len(photos), device)
                outcomes = []
                for photo in photos:
                    try:
                        (outcome,) = await self._loop.run_in_executor(executor, self._protect_batch, [photo], device)
                    except Exception as alone:  # noqa: BLE001 - this photo's answer
                        outcome = alone
                    outcomes.append(outcome)
        for job, outcome in zip(jobs, outcomes):
            self._settle(job, outcome)

    def _protect_batch(self, photos: list[Any], device: str) -> list[Protected | Exception]:
        """In the device's worker thread."""
        if not self.config.torch_threads and device == "cpu":
            use_idle_cores()
        return self._engine.protect_prepared(photos)

    def _settle(self, job: Job, outcome: Protected | BaseException) -> None:
        """Answer `job` with its engine outcome: the protected photo, or the failure's code."""
        if isinstance(outcome, JobAborted):
            self.counters.aborted_running += 1
        elif isinstance(outcome, ImageError):
            self._fail(job, ErrorCode(outcome.code), str(outcome))
        elif isinstance(outcome, BaseException):
            log.error("engine failure (preset %s)", job.settings.preset, exc_info=outcome)
            self._fail(job, ErrorCode.INTERNAL, INTERNAL_MESSAGE)
        else:
            self.cache.put(job.cache_key, outcome)
            self._succeed(job, outcome, cached=False)
