"""Chaos soak: many uploads through LowKey's real extension while the daemon and the extension's
service worker are killed at random moments. Run by hand, not in CI (tests/test_soak.py runs a
short version):

    nice -n 10 .venv/bin/python benchmarks/soak.py [--uploads 1000] [--seed 0] [--steps 1]

What runs: the fake social site (tests/fake_social_site) on 127.0.0.1, Debian's Chromium (headless,
Playwright) with the unpacked extension/, set up through its options page and popup, and a real
`lowkey-daemon serve` (a child process, its own config dir) whose daemon.toml defines the preset
`soak` = `fast` with --steps attack steps and turns the result cache off (so memory is not the
cache filling up). Nothing leaves 127.0.0.1.

Each upload is one distinct LFW photo (lfw-dev, 250x250, one face) through one of the site's upload
styles (form post, fetch, XHR, drop, paste, a script-made input), in --tabs tabs at once (never two
of one style at once, so the site's channel tells whose upload arrived). JPEG originals carry an
EXIF block with a marker; pasted photos go through the clipboard as PNG (Chrome re-encodes the
clipboard, so their originals are recognised by their pixels; only photos with a detected face are
pasted). Every upload must end within --bound seconds either delivered at the site or blocked: the
in-page indicator in state "blocked" with its message (the default failure policy, "block").

Chaos, drawn from --seed: SIGKILL and SIGTERM of the daemon (then started again at once on the same
port) in the first --daemon-chaos-share of the uploads, and stops of the service worker (DevTools
Target.closeTarget) throughout, each 0-1.5 s after an upload started, so most hit a photo in flight.

Counted: originals that reached the site (byte-identical, EXIF marker intact, or, for pastes,
unchanged pixels), deliveries that are not a protected copy (undecodable, other size, or pixels
unchanged: the daemon found no face), uploads stuck past the bound, originals the page could read,
and for every daemon incarnation its resident memory and open sockets (/proc/PID) once it answers
and just before it is stopped. Prints a Markdown report; writes benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import playwright.sync_api as playwright_api
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))   # the fake site and the extension harness

from extension_harness import (Browser, DaemonProcess, chromium_with_extension, drop_files,  # noqa: E402
                               extension_copy, indicator_state, paste_png, process_open_sockets,
                               process_rss_mib, set_up_extension)
from fake_social_site import FakeSocialSite  # noqa: E402

DEFAULT_FACES_DIR = HERE.parents[1] / "shared" / "data" / "faces"
RESULTS = HERE / "results"
SOAK_PRESET = "soak"
#: The fake site's upload styles; each posts to its own channel.
STYLES = ("form", "fetch", "xhr", "drop", "paste", "detached")
#: Written into every JPEG original's EXIF ImageDescription; a delivery holding it kept metadata.
EXIF_MARKER = b"lowkey-soak-original"
EXIF_IMAGE_DESCRIPTION = 0x010E
#: Chaos acts this long (uniform, seconds) after the upload it is attached to started.
CHAOS_DELAY_SECONDS = (0.0, 1.5)
#: How often the site's deliveries are looked at, seconds (a dict lookup).
POLL_SECONDS = 0.1
#: How often a tab's indicator is read, seconds (DevTools walks the page's DOM: costs CPU).
INDICATOR_POLL_SECONDS = 0.75
#: An incarnation's memory and sockets are also sampled after every this many of its deliveries.
SAMPLE_EVERY = 100


#: Tries at reloading the site page when a late form-post navigation interrupts the reload.
NAVIGATION_TRIES = 3


@dataclass(frozen=True)
class SoakPlan:
    uploads: int = 1000
    seed: int = 0
    sigkills: int = 4
    sigterms: int = 4
    worker_stops: int = 10
    #: Tabs uploading at once (each one upload at a time).
    tabs: int = 3
    #: Every upload must be delivered or blocked within this, seconds.
    bound_seconds: float = 60.0
    #: No upload starts after this, seconds from the first one.
    time_limit_seconds: float = 1500.0
    #: Attack steps of the daemon's `soak` preset (base `fast`), and the ensemble members each step attacks.
    steps: int = 1
    members_per_step: int = 1
    #: Daemon kills happen among the first this share of uploads: the last incarnation lives through the rest.
    daemon_chaos_share: float = 0.6
    torch_threads: int = 1


@dataclass
class Upload:
    index: int
    style: str
    photo: str               # the LFW file it was made from
    name: str                # the file name the page gets
    started: float = 0.0     # time.monotonic()
    seconds: float | None = None
    outcome: str = "pending"  # protected, blocked, stuck, original, not-protected
    message: str = ""
    #: Whether chaos could explain a block: the upload was in flight while the daemon was down or
    #: restarting, or when the service worker was stopped.
    exposed: bool = False

    def overlaps(self, window: tuple[float, float]) -> bool:
        return self.started <= window[1] and window[0] <= self.started + (self.seconds or 0.0)


@dataclass
class Incarnation:
    number: int
    pid: int
    started_after: str       # "start", "sigkill", "sigterm"
    ended_by: str = "end of run"
    exit_status: int | None = None
    lived_seconds: float = 0.0
    deliveries: int = 0
    #: (deliveries so far, RSS MiB, open sockets): once it answers, every SAMPLE_EVERY, at its end.
    samples: list[tuple[int, float, int]] = field(default_factory=list)
    began: float = 0.0


@dataclass
class ChaosEvent:
    upload: int              # acts after this upload started
    kind: str                # sigkill, sigterm, worker
    delay: float


@dataclass
class SoakReport:
    plan: SoakPlan
    uploads: list[Upload]
    incarnations: list[Incarnation]
    chaos_done: list[dict]
    #: Deliveries no pending upload of their style was waiting for (each still checked for originals).
    unexpected_deliveries: int
    originals_page_read: int
    seconds: float
    load_average: dict[str, tuple[float, float, float]]

    def count(self, outcome: str) -> int:
        return sum(upload.outcome == outcome for upload in self.uploads)

    @property
    def originals(self) -> int:
        return self.count("original")

    @property
    def stuck(self) -> int:
        return self.count("stuck")

    @property
    def blocked_without_chaos(self) -> int:
        """Blocked uploads no chaos was in flight for (must be 0: the extension and daemon recovered)."""
        return sum(u.outcome == "blocked" and not u.exposed for u in self.uploads)


# --------------------------------------------------------------------------------------- photos

@dataclass
class Original:
    """One upload's file: bytes, and what recognises them (hashes of bytes and of RGB pixels)."""
    path: Path
    data: bytes
    sha256: str
    pixels_sha256: str
    size: tuple[int, int]


def pixels_digest(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return hashlib.sha256(rgb.tobytes()).hexdigest(), rgb.size


def with_exif_marker(jpeg: bytes, index: int) -> bytes:
    """The JPEG with an EXIF APP1 segment (ImageDescription = marker and index) after its JFIF
    APP0, the compressed data untouched."""
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = f"{EXIF_MARKER.decode()} {index}"
    body = exif.tobytes()
    segment = b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body
    after = 2
    if jpeg[2:4] == b"\xff\xe0":
        after = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:after] + segment + jpeg[after:]


def prepare_uploads(plan: SoakPlan, faces_dir: Path, folder: Path,
                    rng: random.Random) -> tuple[list[Upload], dict[int, Original]]:
    """The uploads in order, styles shuffled in rounds of len(STYLES), each with its own original
    file in `folder` (the photos are read-only and stay out of the repository)."""
    photos = sorted((faces_dir / "lfw-dev").glob("*/*.jpg"))
    if not photos:
        raise SystemExit(f"no LFW photos under {faces_dir / 'lfw-dev'} (set --faces-dir)")
    rng.shuffle(photos)
    styles: list[str] = []
    while len(styles) < plan.uploads:
        round_ = list(STYLES)
        rng.shuffle(round_)
        styles += round_
    detector = None
    uploads, originals = [], {}
    pool = iter(photos * (plan.uploads // len(photos) + 2))
    for index, style in enumerate(styles[:plan.uploads]):
        photo = next(pool)
        if style == "paste":
            detector = detector or _face_detector()
            while not detector(photo):   # a paste is recognised by its pixels: they must change
                photo = next(pool)
            image = io.BytesIO()
            Image.open(photo).save(image, format="PNG")
            data, name = image.getvalue(), f"{index:04d}.png"
        else:
            data, name = with_exif_marker(photo.read_bytes(), index), f"{index:04d}_{photo.name}"
        path = folder / name
        path.write_bytes(data)
        pixels, size = pixels_digest(data)
        originals[index] = Original(path, data, hashlib.sha256(data).hexdigest(), pixels, size)
        uploads.append(Upload(index, style, photo.name, name))
    return uploads, originals


def _face_detector():
    import torch

    from lowkey_engine.faces.detect import load_detector
    from lowkey_engine.images.decode import decode_image

    torch.set_num_threads(1)
    detector = load_detector("cpu")
    return lambda path: bool(detector.detect(decode_image(path).pixels))


# ---------------------------------------------------------------------------------- the daemon

def daemon_toml(plan: SoakPlan) -> str:
    return (f'preset = "{SOAK_PRESET}"\ntorch_threads = {plan.torch_threads}\n\n'
            f'[presets.{SOAK_PRESET}]\nbase = "fast"\nsteps = {plan.steps}\n'
            f"members_per_step = {plan.members_per_step}\n\n"
            "[limits]\ncache_megabytes = 0\n")


class ChaoticDaemon:
    """The daemon and its incarnations: started, sampled, killed and started again."""

    def __init__(self, config_dir: Path, plan: SoakPlan, log):
        (config_dir / "daemon.toml").write_text(daemon_toml(plan))
        self.daemon = DaemonProcess(config_dir)
        self.incarnations: list[Incarnation] = []
        #: [killed, next incarnation answered] (time.monotonic()), one per kill.
        self.downtimes: list[list[float]] = []
        self._log = log

    def start(self, after: str, wait: bool) -> None:
        self.daemon.start(wait=wait)
        self.incarnations.append(Incarnation(len(self.incarnations) + 1, self.daemon.pid, after,
                                             began=time.monotonic()))
        if wait:
            self.sample_if_new()

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]

    def sample(self) -> None:
        now = self.current
        now.samples.append((now.deliveries, round(process_rss_mib(now.pid), 1), process_open_sockets(now.pid)))

    def sample_if_new(self) -> bool:
        """Take the first sample once the incarnation answers; True when it does."""
        if self.current.samples:
            return True
        if not self.daemon.ready():
            return False
        self.sample()
        if self.downtimes and self.downtimes[-1][1] == float("inf"):
            self.downtimes[-1][1] = time.monotonic()
        return True

    def delivered(self) -> None:
        self.current.deliveries += 1
        if self.current.samples and self.current.deliveries % SAMPLE_EVERY == 0:
            self.sample()

    def kill(self, kind: str, restart: bool = True) -> None:
        """Stop the current incarnation with SIGKILL or SIGTERM (waits until it has answered, if
        it has not yet), then start the next one without waiting for it."""
        while not self.sample_if_new():
            time.sleep(0.2)
        self.sample()
        now = self.current
        now.ended_by = kind
        self.downtimes.append([time.monotonic(), float("inf")])
        now.exit_status = self.daemon.stop(signal.SIGKILL if kind == "sigkill" else signal.SIGTERM)
        now.lived_seconds = time.monotonic() - now.began
        self._log(f"  {kind} daemon incarnation {now.number} (pid {now.pid}) after {now.deliveries} deliveries")
        if restart:
            self.start(after=kind, wait=False)

    def finish(self) -> None:
        if self.sample_if_new():
            self.sample()
        self.current.lived_seconds = time.monotonic() - self.current.began
        self.current.exit_status = self.daemon.stop(signal.SIGTERM)


# ----------------------------------------------------------------------------------- the soak

def chaos_schedule(plan: SoakPlan, rng: random.Random) -> dict[int, list[ChaosEvent]]:
    first = min(5, plan.uploads - 1)
    daemon_last = max(first + 1, int(plan.uploads * plan.daemon_chaos_share))
    daemon_kinds = ["sigkill"] * plan.sigkills + ["sigterm"] * plan.sigterms
    daemon_at = rng.sample(range(first, daemon_last), len(daemon_kinds))
    events = [ChaosEvent(at, kind, 0.0) for at, kind in zip(daemon_at, rng.sample(daemon_kinds, len(daemon_kinds)))]
    events += [ChaosEvent(at, "worker", 0.0) for at in rng.sample(range(first, plan.uploads), plan.worker_stops)]
    schedule: dict[int, list[ChaosEvent]] = {}
    for event in sorted(events, key=lambda e: e.upload):
        event.delay = round(rng.uniform(*CHAOS_DELAY_SECONDS), 2)
        schedule.setdefault(event.upload, []).append(event)
    return schedule


class Tab:
    """One tab of the fake site, uploading one photo at a time."""

    def __init__(self, browser: Browser, site_url: str):
        self.site_url = site_url
        self.page = browser.context.new_page()
        self.page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site_url.rstrip("/"))
        self.page.goto(site_url)
        self.session = self.page.context.new_cdp_session(self.page)   # kept: the indicator is polled often
        self.upload: Upload | None = None
        self._indicator_read = 0.0
        self.seen_hashes: set[str] = set()

    def begin(self, upload: Upload, path: Path) -> None:
        """Start `upload` the way its style does; returns once the page has the file."""
        self.upload = upload
        page = self.page
        page.evaluate("document.querySelector('lowkey-indicator')?.remove()")   # a fresh indicator per upload
        upload.started = time.monotonic()
        if upload.style == "form":
            page.set_input_files("#form-input", str(path))
            page.click("#form-submit")
        elif upload.style in ("fetch", "xhr"):
            page.set_input_files(f"#{upload.style}-input", str(path))
        elif upload.style == "drop":
            drop_files(page, "#drop-zone", path)
        elif upload.style == "paste":
            paste_png(page, "#paste-zone", path.read_bytes())
        else:
            with page.expect_file_chooser() as chooser:
                page.click("#detached-button")
            chooser.value.set_files(str(path))

    def blocked_message(self) -> str | None:
        """The indicator's message when it says the upload is blocked (read at most every
        INDICATOR_POLL_SECONDS), else None."""
        if time.monotonic() - self._indicator_read < INDICATOR_POLL_SECONDS:
            return None
        self._indicator_read = time.monotonic()
        state, message = indicator_state(self.page, self.session)
        return message if state == "blocked" else None

    def end(self) -> None:
        """The upload is over: reload the page when the style needs it (a form post navigated)."""
        if self.upload.style == "form" or self.upload.outcome == "stuck":
            self.collect_seen()
            for attempt in range(NAVIGATION_TRIES):
                try:
                    self.page.goto(self.site_url)
                    break
                except playwright_api.Error as error:   # the held form post navigated meanwhile: go back again
                    if "interrupted by another navigation" not in str(error) or attempt == NAVIGATION_TRIES - 1:
                        raise
                    self.page.wait_for_load_state()
        self.upload = None

    def collect_seen(self) -> None:
        """The fake site's spy: SHA-256 of every file its script could read in this page."""
        try:
            self.seen_hashes |= set(self.page.evaluate("[...(window.seenFileHashes ?? [])]"))
        except playwright_api.Error:   # the page is navigating (a form post): it read nothing new meanwhile
            pass


def judge(upload: Upload, received, original: Original, originals: dict[int, Original]) -> tuple[str, str]:
    """(outcome, why) of a delivery: original, not-protected or protected."""
    digest = hashlib.sha256(received.data).hexdigest()
    if digest in {o.sha256 for o in originals.values()}:
        return "original", "byte-identical to an original"
    if EXIF_MARKER in received.data:
        return "original", "metadata intact"
    try:
        pixels, size = pixels_digest(received.data)
    except (OSError, ValueError, Image.DecompressionBombError) as error:   # not an image at all
        return "not-protected", f"undecodable delivery ({len(received.data)} bytes): {error}"
    if pixels in {o.pixels_sha256 for o in originals.values()}:
        return ("original", "pixels unchanged (pasted photo with a face)") if upload.style == "paste" else (
            "not-protected", "metadata removed, pixels unchanged (no face found)")
    if size != original.size:
        return "not-protected", f"size {size} instead of {original.size}"
    if upload.style != "paste" and received.filename != upload.name:
        return "not-protected", f"arrived as {received.filename!r}"
    return "protected", ""


def run_soak(plan: SoakPlan, faces_dir: Path, workdir: Path, log=print) -> SoakReport:
    rng = random.Random(plan.seed)
    (workdir / "originals").mkdir(parents=True)
    uploads, originals = prepare_uploads(plan, faces_dir, workdir / "originals", rng)
    schedule = chaos_schedule(plan, rng)
    load_average = {"start": os.getloadavg()}
    chaos_done: list[dict] = []
    worker_stops: list[float] = []
    unexpected = 0
    (workdir / "daemon").mkdir()
    daemon = ChaoticDaemon(workdir / "daemon", plan, log)
    daemon.start(after="start", wait=True)
    daemon.daemon.pair()
    try:
        with FakeSocialSite() as site, chromium_with_extension(extension_copy(workdir), workdir / "profile") as browser:
            set_up_extension(browser, daemon.daemon, site.url, SOAK_PRESET)
            tabs = [Tab(browser, site.url) for _ in range(plan.tabs)]
            consumed = dict.fromkeys(STYLES, 0)
            queue = list(uploads)
            started_at = time.monotonic()
            logged = 0
            while queue or any(tab.upload for tab in tabs):
                daemon.sample_if_new()
                # deliveries, in arrival order per channel
                busy = {tab.upload.style: tab for tab in tabs if tab.upload}
                for style in STYLES:
                    for received in site.uploads(style)[consumed[style]:]:
                        consumed[style] += 1
                        tab = busy.pop(style, None)
                        if tab is None:
                            unexpected += 1
                            outcome, why = judge(Upload(-1, style, "", received.filename), received,
                                                 originals[0], originals)
                            if outcome == "original":
                                uploads.append(Upload(-1, style, "?", received.filename, outcome=outcome,
                                                      message=f"unexpected delivery: {why}"))
                            continue
                        upload = tab.upload
                        upload.seconds = time.monotonic() - upload.started
                        upload.outcome, upload.message = judge(upload, received, originals[upload.index], originals)
                        daemon.delivered()
                        tab.end()
                # blocked or stuck
                for tab in tabs:
                    if tab.upload is None:
                        continue
                    message = tab.blocked_message()
                    elapsed = time.monotonic() - tab.upload.started
                    if message is not None or elapsed > plan.bound_seconds:
                        tab.upload.seconds = elapsed
                        tab.upload.outcome, tab.upload.message = ("blocked", message) if message is not None else (
                            "stuck", f"neither delivered nor blocked after {plan.bound_seconds:g} s")
                        tab.end()
                # next uploads
                if time.monotonic() - started_at > plan.time_limit_seconds:
                    queue.clear()
                for tab in tabs:
                    busy_styles = {t.upload.style for t in tabs if t.upload}
                    if tab.upload is not None or not queue or queue[0].style in busy_styles:
                        continue
                    events = schedule.get(queue[0].index, ())
                    if any(e.kind != "worker" for e in events) and not daemon.sample_if_new():
                        continue   # its kill waits for the last kill's incarnation to answer (the loop goes on)
                    upload = queue.pop(0)
                    tab.begin(upload, originals[upload.index].path)
                    for event in events:
                        time.sleep(event.delay)
                        if event.kind == "worker":
                            worker_stops.append(time.monotonic())
                            stopped = browser.stop_service_worker(tab.page)
                            log(f"  stopped the service worker ({len(stopped)} target)")
                        else:
                            daemon.kill(event.kind)
                        chaos_done.append({**asdict(event), "at_seconds": round(time.monotonic() - started_at, 1)})
                done = sum(u.outcome != "pending" for u in uploads)
                if done >= logged + 50:
                    logged = done
                    log(f"{done} uploads, {time.monotonic() - started_at:.0f} s")
                time.sleep(POLL_SECONDS)
            for tab in tabs:
                tab.collect_seen()
            seconds = time.monotonic() - started_at
            seen = set().union(*(tab.seen_hashes for tab in tabs))
            read = len(seen & {o.sha256 for o in originals.values()})
    finally:
        daemon.finish()
    load_average["end"] = os.getloadavg()
    never_started = [u for u in uploads if u.outcome == "pending"]
    for upload in never_started:
        uploads.remove(upload)
    windows = [tuple(w) for w in daemon.downtimes] + [(at, at) for at in worker_stops]
    for upload in uploads:
        upload.exposed = any(upload.overlaps(window) for window in windows)
    return SoakReport(plan, uploads, daemon.incarnations, chaos_done, unexpected, read, seconds, load_average)


# ------------------------------------------------------------------------------------ reporting

def markdown(report: SoakReport) -> str:
    plan = report.plan
    uploads = [u for u in report.uploads if u.index >= 0]
    lines = [f"{len(uploads)} uploads in {report.seconds / 60:.1f} min (plan {plan.uploads}, seed {plan.seed}, "
             f"{plan.tabs} tabs, bound {plan.bound_seconds:g} s, preset `{SOAK_PRESET}` = fast with {plan.steps} "
             f"step(s) of {plan.members_per_step} member(s), torch threads {plan.torch_threads}); "
             f"load average {report.load_average}", "",
             "| upload style | uploads | protected | blocked | blocked, no chaos in flight | originals at the site | "
             "not protected | stuck | median s delivered | max s delivered | max s to blocked |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for style in (*STYLES, None):
        chosen = [u for u in uploads if style is None or u.style == style]
        delivered = [u.seconds for u in chosen if u.outcome == "protected"]
        blocked = [u.seconds for u in chosen if u.outcome == "blocked"]
        counts = [sum(u.outcome == o for u in chosen) for o in ("protected", "blocked")]
        counts.append(sum(u.outcome == "blocked" and not u.exposed for u in chosen))
        counts += [sum(u.outcome == o for u in chosen) for o in ("original", "not-protected", "stuck")]
        lines.append(f"| {style or '**all**'} | {len(chosen)} | " + " | ".join(map(str, counts))
            + f" | {statistics.median(delivered) if delivered else 0:.2f} | {max(delivered, default=0):.2f}"
            f" | {max(blocked, default=0):.2f} |")
    kinds = [event["kind"] for event in report.chaos_done]
    lines += ["", f"Chaos done: {kinds.count('sigkill')} SIGKILL, {kinds.count('sigterm')} SIGTERM of the daemon, "
              f"{kinds.count('worker')} service-worker stops. Unexpected deliveries: {report.unexpected_deliveries}; "
              f"originals the page could read: {report.originals_page_read}; originals at the site, all deliveries "
              f"included: {report.originals}.", "",
              "| daemon incarnation | came after | ended by | lived (s) | deliveries | RSS at start → end (MiB) | "
              "open sockets at start → end | samples (deliveries, MiB, sockets) |", "|---|---|---|---|---|---|---|---|"]
    for life in report.incarnations:
        first, last = (life.samples[0], life.samples[-1]) if life.samples else ((0, 0, 0), (0, 0, 0))
        lines.append(f"| {life.number} | {life.started_after} | {life.ended_by} | {life.lived_seconds:.0f} | "
                     f"{life.deliveries} | {first[1]} → {last[1]} | {first[2]} → {last[2]} | "
                     f"{' '.join(map(str, life.samples)) if len(life.samples) <= 12 else len(life.samples)} |")
    messages = sorted({u.message for u in uploads if u.outcome in ("blocked", "stuck", "original", "not-protected")})
    lines += ["", "What the page said or what was wrong, each kind once:", *[f"- {m}" for m in messages]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SoakPlan()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=type(value), default=value)
    parser.add_argument("--faces-dir", type=Path, default=Path(os.environ.get("LOWKEY_FACES_DIR", DEFAULT_FACES_DIR)))
    args = parser.parse_args()
    plan = SoakPlan(**{name: getattr(args, name) for name in asdict(defaults)})
    with tempfile.TemporaryDirectory(prefix="lowkey-soak-") as workdir:
        report = run_soak(plan, args.faces_dir, Path(workdir))
    text = markdown(report)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "plan": asdict(plan), "seconds": report.seconds, "load_average": report.load_average,
        "incarnations": [asdict(life) for life in report.incarnations], "chaos": report.chaos_done,
        "uploads": [asdict(u) for u in report.uploads], "originals_page_read": report.originals_page_read,
        "unexpected_deliveries": report.unexpected_deliveries}, indent=1))
    return 1 if report.originals or report.stuck or report.originals_page_read or report.blocked_without_chaos else 0


if __name__ == "__main__":
    sys.exit(main())
