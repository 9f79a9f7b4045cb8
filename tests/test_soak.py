"""A short chaos soak (benchmarks/soak.py): tens of uploads through the real extension in Chromium
against the real daemon (preset `fast` with one attack step, set in the daemon's own daemon.toml),
while the daemon is killed (SIGKILL and SIGTERM) and started again and the extension's service
worker is stopped. No original may reach the site or the page, and every upload must end, within
the bound, delivered protected or blocked with a message in the page.

Needs what tests/test_extension_e2e.py needs (Debian's Chromium, Playwright, the model weights)."""

from __future__ import annotations

import pytest

from benchmarks.soak import SoakPlan, markdown, run_soak

pytestmark = pytest.mark.slow

SHORT_SOAK = SoakPlan(uploads=20, seed=22, sigkills=2, sigterms=2, worker_stops=3, tabs=3,
                      bound_seconds=60.0, time_limit_seconds=180.0, daemon_chaos_share=0.7)


def test_short_chaos_soak_leaks_no_original_and_leaves_no_upload_hanging(faces_dir, tmp_path):
    report = run_soak(SHORT_SOAK, faces_dir, tmp_path)
    print(markdown(report))
    assert report.originals == 0, [u for u in report.uploads if u.outcome == "original"]
    assert report.originals_page_read == 0, "the page could read an original photo"
    assert report.stuck == 0, [u for u in report.uploads if u.outcome == "stuck"]
    assert report.count("not-protected") == 0, [u for u in report.uploads if u.outcome == "not-protected"]
    assert len(report.uploads) == SHORT_SOAK.uploads, "the soak ran out of time before every upload"
    kinds = [event["kind"] for event in report.chaos_done]
    assert (kinds.count("sigkill"), kinds.count("sigterm"), kinds.count("worker")) == (2, 2, 3)
    assert len(report.incarnations) == 5 and all(life.samples for life in report.incarnations), (
        "a daemon incarnation never answered")
    # Chaos explains every block: an upload no kill or worker stop was in flight for got through.
    assert report.blocked_without_chaos == 0, [u for u in report.uploads if u.outcome == "blocked" and not u.exposed]
    calm = [u for u in report.uploads if not u.exposed]
    assert len(calm) >= 4, f"only {len(calm)} uploads ran with no chaos in flight: the check above means little"
    assert all("blocked" in u.message.lower() for u in report.uploads if u.outcome == "blocked")
