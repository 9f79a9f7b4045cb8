"""`lowkey-daemon` commands (daemon/cli.py): pair, status, serve as a real process."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from lowkey_daemon import cli
from lowkey_engine.batching import BUDGET_CANDIDATES

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWKEY_CONFIG_DIR", str(tmp_path))
    for name in [n for n in os.environ if n.startswith("LOWKEY_") and n != "LOWKEY_CONFIG_DIR"]:
        monkeypatch.delenv(name)
    return tmp_path


def test_pair_prints_a_private_token_once_and_rotate_replaces_it(config_dir, capsys):
    assert cli.main(["pair"]) == cli.EXIT_OK
    first = capsys.readouterr().out.strip()
    token_file = config_dir / "pairing-token"
    assert token_file.read_text().strip() == first and len(first) >= 43
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert cli.main(["pair"]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == first
    assert cli.main(["pair", "--rotate"]) == cli.EXIT_OK
    rotated = capsys.readouterr().out.strip()
    assert rotated != first and token_file.read_text().strip() == rotated


def test_bad_configuration_is_a_usage_error(config_dir, capsys):
    (config_dir / "daemon.toml").write_text("port = 'x'\n")
    assert cli.main(["status"]) == cli.EXIT_USAGE
    assert "port must be int" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_then_status_then_terminate(config_dir, capsys):
    port = free_port()
    assert cli.main(["status", "--port", str(port)]) == cli.EXIT_FAILED
    assert "not reachable" in capsys.readouterr().out

    (config_dir / "daemon.toml").write_text(
        f'port = {port}\ndevice = "cpu"\ntorch_threads = 1\n'
        f'[presets.quick]\nbase = "fast"\nsteps = 1\n')
    daemon = subprocess.Popen([sys.executable, "-m", "lowkey_daemon", "serve"], env=os.environ.copy(),
                              stderr=subprocess.PIPE, text=True)
    try:
        for line in daemon.stderr:                    # models load first, then it listens
            if "listening on" in line:
                break
        assert daemon.poll() is None, "the daemon exited during start"
        assert (config_dir / "pairing-token").exists()       # serve creates the token
        assert cli.main(["status", "--port", str(port)]) == cli.EXIT_OK
        report = capsys.readouterr().out
        assert "running at" in report and "devices cpu" in report
        deadline = time.monotonic() + 300               # the worker measures its face budget first
        while "faces per attack batch: cpu " not in report and time.monotonic() < deadline:
            time.sleep(1)
            cli.main(["status", "--port", str(port)])
            report = capsys.readouterr().out
        budget = int(report.split("faces per attack batch: cpu ")[1].split()[0])
        assert budget in BUDGET_CANDIDATES
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
