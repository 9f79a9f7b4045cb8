"""Queue, fairness, cache and cancellation mechanics (daemon/jobs.py) with a stand-in engine.

The stand-in keeps these tests exact and quick; tests/test_daemon_server.py runs the real engine.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import pytest_asyncio

from lowkey_daemon.config import DaemonConfig, Limits
from lowkey_daemon.jobs import FairQueue, Job, JobScheduler, ResultCache, SinglePhotoEngine, cache_key
from lowkey_daemon.protocol import ErrorCode, ProtocolError
from lowkey_engine.protect import Protected
from lowkey_engine.settings import PRESETS

pytestmark = pytest.mark.timeout(60)


def outcome(data: bytes = b"out") -> Protected:
    return Protected(data, "image/png", "PNG", 1, 1, (), 0.0, "cpu", "fast")


class Owner:
    """Records what the scheduler tells it."""

    def __init__(self, name: str):
        self.name = name
        self.events: list[tuple] = []
        self.answered = asyncio.Event()

    def job_progress(self, job, stage, done, total):
        self.events.append(("progress", job.id, stage))

    def job_done(self, job, result, cached):
        self.events.append(("done", job.id, cached, result.data))
        self.answered.set()

    def job_failed(self, job, code, message):
        self.events.append(("failed", job.id, code))
        self.answered.set()

    def answers(self):
        return [e for e in self.events if e[0] != "progress"]


def job(owner, job_id: str, payload: bytes = b"img") -> Job:
    return Job(job_id, owner, "", payload, PRESETS["fast"], cache_key(payload, "fast"))


@pytest.mark.asyncio
async def test_fair_queue_takes_connections_in_turn():
    queue = FairQueue()
    a, b, c = Owner("a"), Owner("b"), Owner("c")
    for item in (job(a, "a1"), job(a, "a2"), job(a, "a3"), job(b, "b1"), job(c, "c1"), job(c, "c2")):
        queue.put(item)
    queue.remove(next(j for j in queue._waiting[c] if j.id == "c2"))
    queue.put(job(c, "c3"))
    order = [(await queue.get()).id for _ in range(6)]
    assert order == ["a1", "b1", "c1", "a2", "c3", "a3"]
    assert len(queue) == 0 and queue.payload_bytes == 0
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.close()
    assert await waiter is None


def test_result_cache_evicts_least_recently_used_by_bytes():
    cache = ResultCache(max_bytes=10)
    cache.put(("a", "fast"), outcome(b"12345"))
    cache.put(("b", "fast"), outcome(b"1234"))
    assert cache.get(("a", "fast")) is not None          # a is now the most recent
    cache.put(("c", "fast"), outcome(b"123"))            # 5 + 4 + 3 > 10: b goes
    assert cache.get(("b", "fast")) is None and cache.get(("a", "fast")) and cache.get(("c", "fast"))
    cache.put(("d", "fast"), outcome(b"x" * 11))         # larger than the whole cache: not kept
    assert cache.get(("d", "fast")) is None and cache.size_bytes == 8
    disabled = ResultCache(max_bytes=0)
    disabled.put(("a", "fast"), outcome(b"1"))
    assert disabled.get(("a", "fast")) is None


def test_cache_key_is_content_and_preset():
    assert cache_key(b"same", "fast") == cache_key(bytes(b"same"), "fast")
    assert cache_key(b"same", "fast") != cache_key(b"same", "strong")
    assert cache_key(b"same", "fast") != cache_key(b"diff", "fast")


class SteppingEngine:
    """protect() stand-in: reports one step at a time, each step released by the test."""

    def __init__(self):
        self.step = threading.Semaphore(0)
        self.started = threading.Event()

    def __call__(self, payload, settings, progress):
        self.started.set()
        while True:
            self.step.acquire()
            progress("attack", 1, 2)
            if payload.startswith(b"finish"):
                return outcome(b"protected:" + payload)


@pytest_asyncio.fixture
async def scheduler():
    engine = SteppingEngine()
    config = DaemonConfig(device=("cpu",), limits=Limits(max_jobs_per_connection=2, max_queued_jobs=2))
    scheduler = JobScheduler(config, engine=SinglePhotoEngine(engine), warm=False)
    scheduler.engine = engine
    await scheduler.start()
    yield scheduler
    engine.step.release(100)
    await scheduler.close()


async def wait_until(condition):
    while not condition():
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_limits_cancel_and_forgetting_an_owner(scheduler):
    a, b, c = Owner("a"), Owner("b"), Owner("c")
    scheduler.submit(a, "a1", "", b"never ends", "fast")
    await asyncio.to_thread(scheduler.engine.started.wait)
    scheduler.submit(a, "a2", "", b"finish a2", "fast")                   # queued
    with pytest.raises(ProtocolError) as per_connection:
        scheduler.submit(a, "a3", "", b"finish a3", "fast")
    assert per_connection.value.code is ErrorCode.BUSY
    with pytest.raises(ProtocolError) as duplicate:
        scheduler.submit(a, "a2", "", b"finish", "fast")
    assert duplicate.value.code is ErrorCode.BAD_REQUEST
    scheduler.submit(b, "b1", "", b"finish b1", "fast")                   # queued: 2 waiting
    with pytest.raises(ProtocolError) as total:
        scheduler.submit(c, "c1", "", b"finish c1", "fast")
    assert total.value.code is ErrorCode.BUSY and total.value.job_id == "c1"

    assert scheduler.cancel(b, "b1") and not scheduler.cancel(b, "b1")
    assert b.answers() == [("failed", "b1", ErrorCode.CANCELLED)]

    scheduler.forget_owner(a)                  # a1 running, a2 queued: both dropped, no answers
    scheduler.engine.step.release()            # a1 reaches its next step and is aborted there
    await wait_until(lambda: scheduler.counters.aborted_running == 1)
    assert a.answers() == [] and scheduler.counters.dropped == 2

    scheduler.submit(c, "c1", "", b"finish c1", "fast")
    scheduler.engine.step.release()
    await c.answered.wait()
    assert c.answers() == [("done", "c1", False, b"protected:finish c1")]
    scheduler.submit(c, "c2", "", b"finish c1", "fast")                   # same bytes: from cache
    assert c.answers()[-1] == ("done", "c2", True, b"protected:finish c1")
    assert scheduler.counters.cache_hits == 1


@pytest.mark.asyncio
async def test_close_answers_queued_and_running_jobs_busy(scheduler):
    a = Owner("a")
    scheduler.submit(a, "a1", "", b"never ends", "fast")
    await asyncio.to_thread(scheduler.engine.started.wait)
    scheduler.submit(a, "a2", "", b"finish", "fast")
    await scheduler.close()
    assert sorted(a.answers()) == [("failed", "a1", ErrorCode.BUSY), ("failed", "a2", ErrorCode.BUSY)]
    with pytest.raises(ProtocolError) as refused:
        scheduler.submit(a, "a3", "", b"finish", "fast")
    assert refused.value.code is ErrorCode.BUSY


class BrokenOwner(Owner):
    """An owner whose answer cannot be delivered (its handler raises)."""

    def job_done(self, job, result, cached):
        super().job_done(job, result, cached)
        raise RuntimeError("cannot send")


@pytest.mark.asyncio
async def test_an_owner_that_fails_to_take_its_answer_does_not_stop_the_worker(scheduler):
    broken, healthy = BrokenOwner("broken"), Owner("healthy")
    scheduler.submit(broken, "b1", "", b"finish b1", "fast")
    scheduler.engine.step.release(1)
    await asyncio.wait_for(broken.answered.wait(), 10)
    scheduler.submit(healthy, "h1", "", b"finish h1", "fast")
    scheduler.engine.step.release(1)
    await asyncio.wait_for(healthy.answered.wait(), 10)
    assert healthy.answers() == [("done", "h1", False, b"protected:finish h1")]


# --------------------------------------------------------------------------- batches


class Photo:
    """A prepared stand-in photo: `faces=N;pixels=P;...` in its payload says how big it is."""

    def __init__(self, payload: bytes, progress):
        fields = dict(part.split(b"=") for part in payload.split(b";") if b"=" in part)
        self.payload, self.progress = payload, progress
        self.face_count = int(fields.get(b"faces", 1))
        self.pixel_count = int(fields.get(b"pixels", 1000))

    def batch_key(self):
        return "same"


class BatchingEngine:
    """prepare/protect_prepared stand-in that records each batch, and runs each one only when
    the test releases it. Like the real engine, it reports every photo's steps and takes a photo
    whose progress callback raises out of the batch (that exception is its outcome); a payload
    holding `fail-batch` makes a batch of several photos fail as a whole, `fail-alone` even alone."""

    STEPS = 2

    def __init__(self):
        self.batches: list[list[bytes]] = []
        self.released = 0
        self.release = threading.Semaphore(0)
        self.started = threading.Event()

    def prepare(self, payload, settings, progress):
        progress("decode", 0, 1)
        return Photo(payload, progress)

    def protect_prepared(self, photos):
        self.batches.append([p.payload for p in photos])
        self.started.set()
        self.release.acquire()
        if any(b"fail-alone" in p.payload for p in photos) or (
                len(photos) > 1 and any(b"fail-batch" in p.payload for p in photos)):
            raise RuntimeError("the batch failed")
        outcomes: dict[int, object] = {}
        for step in range(self.STEPS):
            for index, photo in enumerate(photos):
                if index in outcomes:
                    continue
                try:
                    photo.progress("attack", step + 1, self.STEPS)
                except Exception as stop:  # noqa: BLE001 - as the real engine does
                    outcomes[index] = stop
        return [outcomes.get(i, outcome(b"protected:" + p.payload)) for i, p in enumerate(photos)]


@pytest_asyncio.fixture
async def batching():
    """A scheduler on BatchingEngine: 4 faces a batch, 1 in the first after idle, 1 megapixel."""
    engine = BatchingEngine()
    config = DaemonConfig(device=("cpu",), face_budget=4, first_batch_faces=1,
                          limits=Limits(max_jobs_per_connection=8, batch_megapixels=1))
    scheduler = JobScheduler(config, engine=engine, warm=False)
    scheduler.engine = engine
    await scheduler.start()
    yield scheduler
    engine.release.release(100)
    await scheduler.close()


async def run_batches(scheduler, count: int) -> None:
    """Let the engine run the next `count` batches: wait for each to reach it, then release it."""
    engine = scheduler.engine
    for _ in range(count):
        await wait_until(lambda: len(engine.batches) > engine.released)
        engine.released += 1
        engine.release.release()


@pytest.mark.asyncio
async def test_a_worker_batches_queued_photos_in_fair_order_after_a_small_first_batch(batching):
    a, b = Owner("a"), Owner("b")
    for name in ("a1", "a2", "a3", "a4"):
        batching.submit(a, name, "", name.encode(), "fast")
    await asyncio.to_thread(batching.engine.started.wait)     # a1 runs alone: the first batch
    for name in ("b1", "b2"):
        batching.submit(b, name, "", name.encode(), "fast")
    assert batching.running == 1 and batching.queued == 5
    await run_batches(batching, 3)
    await wait_until(lambda: not batching.running)
    assert batching.engine.batches == [[b"a1"], [b"a2", b"b1", b"a3", b"b2"], [b"a4"]]
    for owner, names in ((a, ("a1", "a2", "a3", "a4")), (b, ("b1", "b2"))):   # each answered once
        assert sorted(owner.answers()) == [("done", n, False, b"protected:" + n.encode()) for n in names]
    assert batching.face_budgets == {"cpu": 4} and batching.counters.completed == 6


@pytest.mark.asyncio
async def test_a_batch_keeps_to_its_face_and_pixel_budgets_and_a_large_photo_runs_alone(batching):
    a = Owner("a")
    payloads = [b"first", b"faces=3;x", b"faces=2;y", b"faces=6;big", b"pixels=600000;p", b"pixels=600000;q", b"last"]
    for index, payload in enumerate(payloads):
        batching.submit(a, f"j{index}", "", payload, "fast")
    await run_batches(batching, 6)
    await wait_until(lambda: not batching.running)
    assert batching.engine.batches == [
        [b"first"], [b"faces=3;x"],            # 3 + 2 faces > 4: the second waits for the next batch
        [b"faces=2;y"], [b"faces=6;big"],      # more faces than the budget: alone
        [b"pixels=600000;p"], [b"pixels=600000;q", b"last"]]   # 0.6 + 0.6 MP > 1 MP
    assert len(a.answers()) == len(payloads) and all(answer[0] == "done" for answer in a.answers())


@pytest.mark.asyncio
async def test_cancelling_one_photo_of_a_batch_keeps_the_others(batching):
    a, b = Owner("a"), Owner("b")
    batching.submit(a, "first", "", b"first", "fast")
    await asyncio.to_thread(batching.engine.started.wait)
    for name in ("a2", "a3"):
        batching.submit(a, name, "", name.encode(), "fast")
    batching.submit(b, "b1", "", b"b1", "fast")
    await run_batches(batching, 1)                  # the first ends; [a2, b1, a3] is built and waits
    await wait_until(lambda: len(batching.engine.batches) == 2)
    assert batching.cancel(a, "a3")                 # it leaves the batch at its first step
    await run_batches(batching, 1)
    await wait_until(lambda: not batching.running)
    assert batching.engine.batches[1] == [b"a2", b"b1", b"a3"]
    assert a.answers() == [("done", "first", False, b"protected:first"), ("failed", "a3", ErrorCode.CANCELLED),
                           ("done", "a2", False, b"protected:a2")]
    assert b.answers() == [("done", "b1", False, b"protected:b1")]
    assert batching.counters.aborted_running == 1 and batching.counters.cancelled == 1


@pytest.mark.asyncio
async def test_a_failing_batch_is_retried_photo_by_photo(batching, caplog):
    a = Owner("a")
    batching.submit(a, "first", "", b"first", "fast")
    await asyncio.to_thread(batching.engine.started.wait)
    for name, payload in (("ok1", b"ok1"), ("bad", b"fail-batch"), ("worse", b"fail-alone"), ("ok2", b"ok2")):
        batching.submit(a, name, "", payload, "fast")
    await run_batches(batching, 6)
    await wait_until(lambda: not batching.running)
    assert batching.engine.batches[1:] == [[b"ok1", b"fail-batch", b"fail-alone", b"ok2"],
                                           [b"ok1"], [b"fail-batch"], [b"fail-alone"], [b"ok2"]]
    answers = dict((answer[1], answer[2]) for answer in a.answers())
    assert answers == {"first": False, "ok1": False, "bad": False, "worse": ErrorCode.INTERNAL, "ok2": False}
    assert "each is tried alone" in caplog.text


@pytest.mark.asyncio
async def test_the_same_photo_twice_in_one_burst_is_attacked_once(batching):
    a, b = Owner("a"), Owner("b")
    batching.submit(a, "first", "", b"first", "fast")
    await asyncio.to_thread(batching.engine.started.wait)
    batching.submit(a, "mine", "", b"same photo", "fast")
    batching.submit(b, "theirs", "", b"same photo", "fast")
    await run_batches(batching, 2)
    await wait_until(lambda: not batching.running)
    assert batching.engine.batches == [[b"first"], [b"same photo"]]
    assert a.answers()[-1] == ("done", "mine", False, b"protected:same photo")
    assert b.answers() == [("done", "theirs", True, b"protected:same photo")]
