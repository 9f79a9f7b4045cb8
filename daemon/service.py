"""Run the daemon at login: a systemd user unit (Linux), a launchd agent (macOS), or a per-user
logon scheduled task (Windows). Templates live in `install/`; this module fills them in, writes
the result where the platform looks for it, and runs the platform's enable/disable commands.

    plan = service_plan(serve_command(config_path=None))
    install(plan)                     # write + enable + start
    uninstall(plan)                   # stop + disable + remove
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Callable, Sequence
from xml.sax.saxutils import escape

from .config import user_config_dir

#: Where the templates are (the checkout's install/ folder).
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "install"
SYSTEMD_TEMPLATE = "lowkey-daemon.service"
LAUNCHD_TEMPLATE = "org.lowkey.daemon.plist"
WINDOWS_TEMPLATE = "lowkey-daemon-task.xml"

SYSTEMD_UNIT_NAME = "lowkey-daemon.service"
LAUNCHD_LABEL = "org.lowkey.daemon"
WINDOWS_TASK_NAME = "LowKeyDaemon"
#: Windows reads task XML as UTF-16 (the template's XML declaration says so).
WINDOWS_XML_ENCODING = "utf-16"

Runner = Callable[[Sequence[str]], None]


class ServiceError(RuntimeError):
    """The platform is not supported or one of its commands failed."""


@dataclass(frozen=True)
class Step:
    """One platform command. may_fail: its failure is expected at times (stopping a service that
    is not running) and ignored."""

    command: tuple[str, ...]
    may_fail: bool = False


@dataclass(frozen=True)
class ServicePlan:
    """What installing means on one platform: a file and the commands around it."""

    platform: str
    path: Path
    content: str
    encoding: str
    enable: tuple[Step, ...]
    disable: tuple[Step, ...]


def serve_command(config_path: Path | None = None, python: str | None = None) -> list[str]:
    """The command the service runs: this interpreter running the daemon's `serve`."""
    command = [python or sys.executable, "-m", "lowkey_daemon", "serve"]
    if config_path is not None:
        command += ["--config", str(Path(config_path).resolve())]
    return command


def service_plan(command: Sequence[str], platform: str | None = None) -> ServicePlan:
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return _systemd_plan(command)
    if platform == "darwin":
        return _launchd_plan(command)
    if platform == "win32":
        return _windows_plan(command)
    raise ServiceError(f"installing a service is not supported on {platform}")


def install(plan: ServicePlan, run: Runner | None = None, enable: bool = True) -> None:
    """Write the unit file (replacing an older one), then enable and start it (unless not
    `enable`: then only the file is written)."""
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    plan.path.write_text(plan.content, encoding=plan.encoding)
    if enable:
        _run_steps(plan.enable, run or run_checked)


def uninstall(plan: ServicePlan, run: Runner | None = None, disable: bool = True) -> bool:
    """Stop and disable the service, remove its file. False when it was not installed."""
    if not plan.path.exists():
        return False
    if disable:
        _run_steps(plan.disable, run or run_checked)
    plan.path.unlink()
    return True


def _run_steps(steps: Sequence[Step], run: Runner) -> None:
    for step in steps:
        try:
            run(step.command)
        except ServiceError:
            if not step.may_fail:
                raise


def run_checked(command: Sequence[str]) -> None:
    try:
        completed = subprocess.run(list(command), capture_output=True, text=True)
    except FileNotFoundError:
        raise ServiceError(f"{command[0]} is not available on this machine") from None
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()
        raise ServiceError(f"`{' '.join(command)}` failed ({completed.returncode}): {detail}")


def render(template_name: str, **values: str) -> str:
    """A template from install/ with its $placeholders filled in (every one must be given)."""
    return Template((TEMPLATE_DIR / template_name).read_text(encoding="utf-8")).substitute(values)


# --------------------------------------------------------------------------- Linux

def systemd_quote(argument: str) -> str:
    """One ExecStart argument, quoted by systemd's rules (specifiers % and variables $ escaped)."""
    escaped = (argument.replace("\\", "\\\\").replace('"', '\\"')
               .replace("%", "%%").replace("$", "$$"))
    return f'"{escaped}"'


def _systemd_plan(command: Sequence[str]) -> ServicePlan:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    systemctl = ("systemctl", "--user")
    return ServicePlan(
        platform="linux",
        path=base / "systemd" / "user" / SYSTEMD_UNIT_NAME,
        content=render(SYSTEMD_TEMPLATE, exec_start=" ".join(systemd_quote(a) for a in command)),
        encoding="utf-8",
        enable=(Step(systemctl + ("daemon-reload",)),
                Step(systemctl + ("enable", "--now", SYSTEMD_UNIT_NAME))),
        disable=(Step(systemctl + ("disable", "--now", SYSTEMD_UNIT_NAME)),))


# --------------------------------------------------------------------------- macOS

def _launchd_plan(command: Sequence[str]) -> ServicePlan:
    path = Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/0"
    arguments = "\n".join(f"        <string>{escape(a)}</string>" for a in command)
    log_path = Path.home() / "Library" / "Logs" / "lowkey-daemon.log"   # the folder always exists
    return ServicePlan(
        platform="darwin", path=path,
        content=render(LAUNCHD_TEMPLATE, label=LAUNCHD_LABEL, program_arguments=arguments,
                       log_path=escape(str(log_path))),
        encoding="utf-8",
        enable=(Step(("launchctl", "bootout", domain, str(path)), may_fail=True),   # a previous copy
                Step(("launchctl", "bootstrap", domain, str(path)))),
        disable=(Step(("launchctl", "bootout", domain, str(path))),))


# --------------------------------------------------------------------------- Windows

def _windows_plan(command: Sequence[str]) -> ServicePlan:
    executable = Path(command[0])
    windowless = executable.with_name("pythonw.exe")   # no console window at logon
    if executable.name.lower() == "python.exe" and windowless.exists():
        executable = windowless
    user = os.environ.get("USERNAME", "")
    domain = os.environ.get("USERDOMAIN")
    path = user_config_dir() / WINDOWS_TEMPLATE
    return ServicePlan(
        platform="win32", path=path,
        content=render(WINDOWS_TEMPLATE, user_id=escape(f"{domain}\\{user}" if domain else user),
                       command=escape(str(executable)),
                       arguments=escape(subprocess.list2cmdline(list(command[1:])))),
        encoding=WINDOWS_XML_ENCODING,
        enable=(Step(("schtasks", "/Create", "/TN", WINDOWS_TASK_NAME, "/XML", str(path), "/F")),
                Step(("schtasks", "/Run", "/TN", WINDOWS_TASK_NAME))),
        disable=(Step(("schtasks", "/End", "/TN", WINDOWS_TASK_NAME), may_fail=True),   # not running
                 Step(("schtasks", "/Delete", "/TN", WINDOWS_TASK_NAME, "/F"))))
