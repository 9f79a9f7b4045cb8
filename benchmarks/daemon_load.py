"""Daemon load benchmark: latency and throughput with 50 queued photos, cache hits, and the
daemon's memory over 500 jobs; or, with --album, an album of twelve photos through the batching
worker against one photo at a time.

    .venv/bin/python benchmarks/daemon_load.py [--device cpu] [--steps 1] [--torch-threads 1]
    .venv/bin/python benchmarks/daemon_load.py --album [--album-preset fast] [--device cpu|cuda]
        [--torch-threads 0] [--rounds 2] [--face-budget 0]

Starts `python -m lowkey_daemon serve` as its own process (a fresh config directory, a free port,
a custom preset "bench" = the fast preset with --steps attack steps), talks protocol v1 to it like
the extension does, and reads its resident memory from /proc (Linux). Every photo is a distinct
LFW photo (250x250, one face), so nothing is served from the cache except in the cache phase.
Prints a Markdown summary and writes benchmarks/results/daemon-load-<device>.json.

--album: twelve photos of mixed sizes and face counts (ALBUM: photos-deepface, photos-group, LFW;
22 faces) sent at once over one socket, as the extension sends a multi-photo upload, to two
daemons in turn: one photo at a time (`face_budget = 1`, `first_batch_faces = 0`: today's worker,
the same engine) and batching (`face_budget` as given, 0 = measured at start; the first batch
after idle 1 face). Each daemon gets a warm-up album first (the result cache is off, so every
round runs the engine), then `--rounds` timed albums, the two daemons alternating round by round.
Per round: photos a minute, seconds until the first photo is back, and until the last.
Writes benchmarks/results/album-<device>.json.
Run by hand on a quiet machine; never part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

from lowkey_daemon.config import CHROMIUM_EXTENSION_ID
from lowkey_daemon.protocol import decode_frame, encode_frame
from lowkey_weights.datasets import faces_dir

HERE = Path(__file__).resolve().parent
DEFAULT_FACES_DIR = faces_dir()
ORIGIN = f"chrome-extension://{CHROMIUM_EXTENSION_ID}"
BENCH_PRESET = "bench"
#: Largest daemon header this client reads, bytes.
MAX_HEADER = 1 << 20
#: Jobs each memory-phase client keeps in flight (below the daemon's per-connection limit).
MEMORY_WINDOW = 4
#: Resident memory is sampled after every this many completed memory-phase jobs.
MEMORY_SAMPLE_EVERY = 50
START_TIMEOUT_SECONDS = 600


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Client:
    """One authenticated protocol v1 socket that matches answers to ids."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.waiting: dict[str, asyncio.Future] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str, token: str) -> "Client":
        ws = await session.ws_connect(url, origin=ORIGIN, max_msg_size=0)
        await ws.send_bytes(encode_frame({"type": "hello", "token": token, "client": "bench"}))
        welcome, _ = decode_frame((await ws.receive()).data, MAX_HEADER)
        assert welcome["type"] == "welcome", welcome
        return cls(ws)

    async def _read(self) -> None:
        async for message in self.ws:
            header, payload = decode_frame(message.data, MAX_HEADER)
            if header["type"] in ("result", "error"):
                self.waiting.pop(header["id"]).set_result((header, time.perf_counter()))

    async def protect(self, job_id: str, photo: bytes) -> tuple[dict, float]:
        """(answer header, seconds from send to answer)."""
        sent = time.perf_counter()
        header, received = await self.protect_with(job_id, photo, BENCH_PRESET)
        return header, received - sent

    async def protect_with(self, job_id: str, photo: bytes, preset: str) -> tuple[dict, float]:
        """(answer header, perf_counter time it arrived)."""
        answer = asyncio.get_running_loop().create_future()
        self.waiting[job_id] = answer
        await self.ws.send_bytes(encode_frame({"type": "protect", "id": job_id, "preset": preset}, photo))
        header, received = await answer
        assert header["type"] == "result", header
        return header, received

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


async def burst(clients: list[Client], photos: list[bytes], tag: str) -> dict:
    """All photos sent at once, spread over the clients; latency per photo and throughput."""
    started = time.perf_counter()
    answers = await asyncio.gather(*(clients[i % len(clients)].protect(f"{tag}-{i}", photo)
                                     for i, photo in enumerate(photos)))
    wall = time.perf_counter() - started
    latencies = [seconds for _, seconds in answers]
    engine = [header["stats"]["seconds"] for header, _ in answers]
    return {"photos": len(photos), "wall_s": wall, "photos_per_s": len(photos) / wall,
            "latency_p50_s": percentile(latencies, 0.5), "latency_p95_s": percentile(latencies, 0.95),
            "latency_max_s": max(latencies), "first_result_s": min(latencies),
            "engine_s_mean": statistics.mean(engine),
            "cached": sum(header["stats"]["cached"] for header, _ in answers)}


async def memory_run(clients: list[Client], photos: list[bytes], pid: int) -> dict:
    """`photos` jobs with MEMORY_WINDOW in flight per client; RSS after every 50 answers."""
    samples = [rss_mib(pid)]
    done = 0
    queue = list(enumerate(photos))

    async def feed(client: Client) -> None:
        nonlocal done
        while queue:
            index, photo = queue.pop(0)
            await client.protect(f"mem-{index}", photo)
            done += 1
            if done % MEMORY_SAMPLE_EVERY == 0:
                samples.append(rss_mib(pid))

    started = time.perf_counter()
    await asyncio.gather(*(feed(c) for c in clients for _ in range(MEMORY_WINDOW)))
    return {"jobs": len(photos), "wall_s": time.perf_counter() - started, "rss_mib": samples,
            "rss_growth_mib": samples[-1] - samples[1] if len(samples) > 1 else 0.0}


async def measure(url: str, token: str, pid: int, photos: list[bytes], args) -> dict:
    queued, jobs = args.queued, args.jobs
    async with aiohttp.ClientSession() as session:
        clients = [await Client.open(session, url, token) for _ in range(args.clients)]
        rss_start = rss_mib(pid)
        queued_burst = await burst(clients, photos[:queued], "burst")
        cache_burst = await burst(clients, photos[:queued], "again")        # same bytes: cache
        memory = await memory_run(clients, photos[queued:queued + jobs], pid)
        for client in clients:
            await client.close()
    return {"rss_after_start_mib": rss_start, "queued": queued_burst, "cache_hits": cache_burst,
            "memory": memory}


def start_daemon(config_dir: Path, args) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (config_dir / "daemon.toml").write_text(
        f'port = {port}\ndevice = "{args.device}"\npreset = "{BENCH_PRESET}"\n'
        f"torch_threads = {args.torch_threads}\n"
        f"[limits]\nmax_queued_jobs = {max(64, args.queued)}\n"
        f"max_jobs_per_connection = {max(8, args.queued // args.clients + 1)}\n"
        f'[presets.{BENCH_PRESET}]\nbase = "fast"\nsteps = {args.steps}\n')
    return launch(config_dir, port)


def launch(config_dir: Path, port: int) -> tuple[subprocess.Popen, int]:
    """`lowkey-daemon serve` with the daemon.toml in `config_dir`, once it listens on `port`."""
    env = {**os.environ, "LOWKEY_CONFIG_DIR": str(config_dir)}
    daemon = subprocess.Popen([sys.executable, "-m", "lowkey_daemon", "serve"], env=env,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    for line in daemon.stderr:
        if "listening on" in line:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not start in time")
    if daemon.poll() is not None:
        raise RuntimeError("the daemon exited during start")
    threading.Thread(target=drain, args=(daemon.stderr,), daemon=True).start()
    return daemon, port


def drain(stream) -> None:
    """Keep reading the daemon's log so a full pipe never blocks it."""
    for _ in stream:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1, help="attack steps of the bench preset")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker (0: the idle cores)")
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--queued", type=int, default=50, help="photos queued at once")
    parser.add_argument("--jobs", type=int, default=500, help="jobs in the memory run")
    parser.add_argument("--faces-dir", type=Path, default=DEFAULT_FACES_DIR)
    parser.add_argument("--album", action="store_true", help="the album benchmark instead (module docstring)")
    parser.add_argument("--album-preset", default="fast", help="engine preset the album is protected with")
    parser.add_argument("--face-budget", type=int, default=0, help="the batching daemon's (0: measured at start)")
    parser.add_argument("--rounds", type=int, default=2, help="timed albums per daemon, after a warm-up album")
    args = parser.parse_args()
    if args.album:
        album_benchmark(args)
        return

    paths = sorted((args.faces_dir / "lfw-dev").glob("*/*.jpg"))
    needed = args.queued + args.jobs
    if len(paths) < needed:
        raise SystemExit(f"need {needed} distinct photos, found {len(paths)}")
    photos = [p.read_bytes() for p in paths[:needed]]

    with tempfile.TemporaryDirectory(prefix="lowkey-bench-") as tmp:
        config_dir = Path(tmp)
        started = time.perf_counter()
        daemon, port = start_daemon(config_dir, args)
        start_s = time.perf_counter() - started
        try:
            token = (config_dir / "pairing-token").read_text().strip()
            results = asyncio.run(measure(f"http://127.0.0.1:{port}/v1/ws", token, daemon.pid,
                                          photos, args))
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)

    results.update({"start_s": start_s, "device": args.device, "steps": args.steps,
                    "torch_threads": args.torch_threads, "clients": args.clients})
    report(results, f"daemon-load-{args.device}.json", summary)


def report(results: dict, name: str, summarise) -> None:
    """Add the machine and its load to `results`, write them to results/`name`, print the summary."""
    results.update({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                    "load_average": os.getloadavg()})
    out = HERE / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(summarise(results))
    print(f"\nwrote {out}")


def summary(r: dict) -> str:
    q, c, m = r["queued"], r["cache_hits"], r["memory"]
    return "\n".join([
        f"device {r['device']}, preset fast with {r['steps']} attack step(s), torch threads "
        f"{r['torch_threads']}, {r['clients']} clients; {r['machine']}, load average "
        f"{', '.join(f'{x:.1f}' for x in r['load_average'])}",
        "",
        "| measure | value |", "|---|---|",
        f"| daemon start (models loaded, listening) | {r['start_s']:.1f} s |",
        f"| {q['photos']} photos queued at once: wall | {q['wall_s']:.1f} s |",
        f"| throughput | {q['photos_per_s']:.2f} photos/s |",
        f"| latency p50 / p95 / max | {q['latency_p50_s']:.1f} / {q['latency_p95_s']:.1f} / "
        f"{q['latency_max_s']:.1f} s |",
        f"| first result | {q['first_result_s']:.2f} s |",
        f"| engine time per photo (mean) | {q['engine_s_mean']:.2f} s |",
        f"| same {c['photos']} photos again (cache): latency p50 / max | "
        f"{c['latency_p50_s'] * 1000:.0f} / {c['latency_max_s'] * 1000:.0f} ms ({c['cached']} hits) |",
        f"| daemon RSS after start | {r['rss_after_start_mib']:.0f} MiB |",
        f"| {m['jobs']} jobs: RSS every {MEMORY_SAMPLE_EVERY} jobs | "
        + " ".join(f"{x:.0f}" for x in m["rss_mib"]) + " MiB |",
        f"| RSS growth, job {MEMORY_SAMPLE_EVERY} to job {m['jobs']} | {m['rss_growth_mib']:+.0f} MiB |",
        f"| {m['jobs']} jobs: wall / throughput | {m['wall_s']:.0f} s / "
        f"{m['jobs'] / m['wall_s']:.2f} photos/s |",
    ])


# --------------------------------------------------------------------------- album

#: Twelve photos as an album might hold them: (set, photo) under the faces folder. 22 faces: one
#: photo of 4, three of 3, one of 2, seven of 1; from 250x250 LFW crops to a 14-megapixel portrait.
ALBUM = (
    ("photos-deepface", "person01/img1.jpg"),       # 1382x1868, 1 face
    ("photos-deepface", "person02/img54.jpg"),      # 2000x2400, 3 faces
    ("photos-group", "sample1.jpg"),                # 3 faces
    ("lfw-dev", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"),
    ("photos-deepface", "person03/img49.jpg"),      # 4352x2903, 1 face
    ("photos-deepface", "person11/img31.jpg"),      # 2500x1655, 2 faces
    ("photos-group", "obama.jpg"),
    ("lfw-dev", "Abdoulaye_Wade/Abdoulaye_Wade_0001.jpg"),
    ("photos-deepface", "person05/img62.jpg"),      # 660x440, 3 faces
    ("photos-group", "sample4.jpg"),                # 4 faces
    ("photos-deepface", "person13/img40.jpg"),      # 3061x4600, 1 face
    ("lfw-dev", "Adam_Sandler/Adam_Sandler_0001.jpg"),
)
#: The two daemons of the album benchmark: name -> extra top-level daemon.toml lines.
ALBUM_DAEMONS = {"one photo at a time": "face_budget = 1\nfirst_batch_faces = 0\n",
                 "batching": "face_budget = {face_budget}\nfirst_batch_faces = 1\n"}


def start_album_daemon(config_dir: Path, args, extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "daemon.toml").write_text(
        f'port = {port}\ndevice = "{args.device}"\npreset = "{args.album_preset}"\n'
        f"torch_threads = {args.torch_threads}\n{extra}"
        f"[limits]\ncache_megabytes = 0\nmax_jobs_per_connection = {len(ALBUM)}\n")
    return launch(config_dir, port)


async def face_budget_known(port: int) -> dict:
    """The daemon's health once every worker has its face budget (measured at start)."""
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{port}/v1/health") as response:
                health = await response.json()
            if len(health.get("face_budget", {})) == len(health["devices"]):
                return health
            await asyncio.sleep(0.5)


async def send_album(port: int, token: str, photos: list[bytes], preset: str, tag: str) -> dict:
    """All photos at once over one socket; seconds from the send to each answer."""
    async with aiohttp.ClientSession() as session:
        client = await Client.open(session, f"http://127.0.0.1:{port}/v1/ws", token)
        started = time.perf_counter()
        answers = await asyncio.gather(*(client.protect_with(f"{tag}-{i}", photo, preset)
                                         for i, photo in enumerate(photos)))
        await client.close()
    back = sorted(received - started for _, received in answers)
    faces = sum(header["faces"] for header, _ in answers)
    return {"photos": len(photos), "faces": faces, "first_s": back[0], "last_s": back[-1],
            "photos_per_minute": 60 * len(photos) / back[-1], "back_s": back}


def album_benchmark(args) -> None:
    photos = [(args.faces_dir / folder / name).read_bytes() for folder, name in ALBUM]
    rounds: dict[str, list[dict]] = {name: [] for name in ALBUM_DAEMONS}
    health: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lowkey-album-") as tmp:
        daemons = {}
        try:
            for name, extra in ALBUM_DAEMONS.items():        # one at a time: a budget measures alone
                folder = Path(tmp) / name.replace(" ", "-")
                daemon, port = start_album_daemon(folder, args, extra.format(face_budget=args.face_budget))
                daemons[name] = (daemon, port, (folder / "pairing-token").read_text().strip())
                health[name] = asyncio.run(face_budget_known(port))
            for _, port, token in daemons.values():   # warm-up
                asyncio.run(send_album(port, token, photos, args.album_preset, "warm"))
            for round_index in range(args.rounds):
                for name, (_, port, token) in daemons.items():
                    rounds[name].append(asyncio.run(send_album(port, token, photos, args.album_preset,
                                                               f"r{round_index}")))
        finally:
            for daemon, _, _ in daemons.values():
                daemon.terminate()
                daemon.wait(timeout=60)
    results = {"album": [f"{folder}/{name}" for folder, name in ALBUM], "preset": args.album_preset,
               "device": args.device, "torch_threads": args.torch_threads, "rounds": rounds,
               "face_budget": {name: h.get("face_budget") for name, h in health.items()}}
    report(results, f"album-{args.device}.json", album_summary)


def album_summary(r: dict) -> str:
    base, batched = (r["rounds"][name] for name in ALBUM_DAEMONS)

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    lines = [f"album of {base[0]['photos']} photos ({base[0]['faces']} faces), preset {r['preset']}, device "
             f"{r['device']}, torch threads {r['torch_threads'] or 'the idle cores'}, face budget "
             f"{r['face_budget']}; {r['machine']}, load average "
             f"{', '.join(f'{x:.1f}' for x in r['load_average'])}", "",
             "| worker | round | photos a minute | first photo back (s) | last photo back (s) |",
             "|---|---|---|---|---|"]
    for name, runs in r["rounds"].items():
        for index, run in enumerate(runs):
            lines.append(f"| {name} | {index + 1} | {run['photos_per_minute']:.1f} | {run['first_s']:.1f} | "
                         f"{run['last_s']:.1f} |")
    lines += ["", f"batching / one at a time, medians: throughput "
              f"{median(batched, 'photos_per_minute') / median(base, 'photos_per_minute'):.2f}x, first photo back "
              f"{median(batched, 'first_s') / median(base, 'first_s'):.2f}x the time"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
