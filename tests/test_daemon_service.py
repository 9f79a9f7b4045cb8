"""Service units from install/ (daemon/service.py): rendered, linted, installed and removed.

The systemd unit is linted with `systemd-analyze verify --user` (works without systemd running).
CI must have systemd-analyze installed (Debian: `apt-get install -y systemd`); without it the
lint test fails rather than skips.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from lowkey_daemon import service

TASK_NAMESPACE = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
#: An argument with everything that needs quoting in some unit format.
AWKWARD_CONFIG = "/home/a user/lowkey & co/<cfg> \"50%\" $HOME.toml"


def awkward_command() -> list[str]:
    return [sys.executable, "-m", "lowkey_daemon", "serve", "--config", AWKWARD_CONFIG]


def systemd_verify(unit_path, tmp_path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install -y systemd"
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run([analyze, "verify", "--user", str(unit_path)], capture_output=True,
                          text=True, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    plan = service.service_plan(service.serve_command(), platform="linux")
    service.install(plan, enable=False)
    assert plan.path == tmp_path / "config" / "systemd" / "user" / service.SYSTEMD_UNIT_NAME
    checked = systemd_verify(plan.path, tmp_path)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked


def test_systemd_lint_catches_a_broken_unit(tmp_path):
    broken = tmp_path / "broken.service"
    broken.write_text(service.render(service.SYSTEMD_TEMPLATE,
                                     exec_start='"/nonexistent/python" -m lowkey_daemon serve'))
    assert systemd_verify(broken, tmp_path).returncode != 0


def test_systemd_quoting_survives_awkward_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    plan = service.service_plan(awkward_command(), platform="linux")
    exec_start = next(line for line in plan.content.splitlines() if line.startswith("ExecStart="))
    assert '"--config"' in exec_start and "%%" in exec_start and "$$HOME" in exec_start
    service.install(plan, enable=False)
    checked = systemd_verify(plan.path, tmp_path)
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked


def test_launch_agent_is_a_valid_plist_running_the_daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    plan = service.service_plan(awkward_command(), platform="darwin")
    agent = plistlib.loads(plan.content.encode("utf-8"))
    assert agent["Label"] == service.LAUNCHD_LABEL
    assert agent["ProgramArguments"] == awkward_command()
    assert agent["RunAtLoad"] is True and agent["Umask"] == 0o077
    assert plan.path == tmp_path / "Library" / "LaunchAgents" / f"{service.LAUNCHD_LABEL}.plist"
    assert [s.command[1] for s in plan.enable] == ["bootout", "bootstrap"]


def test_windows_task_is_valid_task_xml_running_the_daemon_at_logon(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWKEY_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("USERNAME", "ada")
    monkeypatch.setenv("USERDOMAIN", "HOME-PC")
    plan = service.service_plan(awkward_command(), platform="win32")
    service.install(plan, enable=False)
    raw = plan.path.read_bytes()
    assert raw.startswith(b"\xff\xfe")                          # UTF-16 with BOM, as declared
    task = ElementTree.fromstring(raw.decode("utf-16").split("?>", 1)[1])
    find = lambda path: task.find(path, TASK_NAMESPACE).text      # noqa: E731
    assert find("t:Triggers/t:LogonTrigger/t:UserId") == "HOME-PC\\ada"
    assert find("t:Principals/t:Principal/t:RunLevel") == "LeastPrivilege"
    assert find("t:Actions/t:Exec/t:Command") == sys.executable
    assert find("t:Actions/t:Exec/t:Arguments") == subprocess.list2cmdline(awkward_command()[1:])


def test_install_enables_and_uninstall_disables_and_removes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    ran: list[tuple[str, ...]] = []
    plan = service.service_plan(service.serve_command(), platform="linux")
    service.install(plan, run=ran.append)
    assert plan.path.exists()
    assert ran == [("systemctl", "--user", "daemon-reload"),
                   ("systemctl", "--user", "enable", "--now", service.SYSTEMD_UNIT_NAME)]
    ran.clear()
    assert service.uninstall(plan, run=ran.append) is True
    assert not plan.path.exists()
    assert ran == [("systemctl", "--user", "disable", "--now", service.SYSTEMD_UNIT_NAME)]
    assert service.uninstall(plan, run=ran.append) is False


def test_a_failing_service_manager_is_reported_but_expected_failures_are_not(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWKEY_CONFIG_DIR", str(tmp_path))

    def task_not_running(command):
        if "/End" in command or "/Delete" in command:
            raise service.ServiceError(f"{command[1]} failed")

    plan = service.service_plan(service.serve_command(), platform="win32")
    service.install(plan, enable=False)
    with pytest.raises(service.ServiceError, match="/Delete"):     # /End may fail, /Delete may not
        service.uninstall(plan, run=task_not_running)
    with pytest.raises(service.ServiceError, match="not supported"):
        service.service_plan(service.serve_command(), platform="sunos5")
