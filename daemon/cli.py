"""`lowkey-daemon`: serve, pair, status, install-service, uninstall-service.

Every command takes `--config FILE` and a flag per setting (`--port`, `--device`, `--preset`,
`--allowed-origins`, `--max-image-bytes`...; see daemon/config.py), which override the file and
the LOWKEY_* environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from . import service
from .auth import ensure_token, read_token, write_new_token
from .config import CONFIG_PATH_ENV, ConfigError, DaemonConfig, env_name, load_config, setting_names
from .server import HEALTH_PATH, LOOPBACK_ADDRESS, WEBSOCKET_PATH, run

#: How long `status` waits for the daemon's health answer, seconds.
STATUS_TIMEOUT_SECONDS = 3.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {name: getattr(args, name) for name in setting_names()}
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as error:
        print(f"lowkey-daemon: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.command(args, config)
    except ConfigError as error:      # found once the daemon starts, e.g. a device torch lacks
        print(f"lowkey-daemon: {error}", file=sys.stderr)
        return EXIT_USAGE
    except service.ServiceError as error:
        print(f"lowkey-daemon: {error}", file=sys.stderr)
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument("--config", type=Path, help="TOML config file (default: $LOWKEY_CONFIG, "
                          "else daemon.toml in the user's config directory)")
    for name in setting_names():
        settings.add_argument("--" + name.replace("_", "-"), dest=name, metavar="VALUE",
                              help=f"overrides `{name}` and ${env_name(name)}")

    parser = argparse.ArgumentParser(prog="lowkey-daemon", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for name, handler, summary in (
            ("serve", serve, "run the daemon in the foreground"),
            ("pair", pair, "print the pairing token to paste into the extension"),
            ("status", status, "ask a running daemon how it is"),
            ("install-service", install_service, "run the daemon at login (systemd, launchd, "
                                                 "or a Windows logon task)"),
            ("uninstall-service", uninstall_service, "stop running the daemon at login")):
        command = commands.add_parser(name, parents=[settings], help=summary, description=summary)
        command.set_defaults(command=handler)
        if name == "pair":
            command.add_argument("--rotate", action="store_true",
                                 help="replace the token (the extension must be paired again)")
        if name in ("install-service", "uninstall-service"):
            command.add_argument("--no-enable", action="store_true",
                                 help="only write/remove the unit file; run no service manager")
    return parser


def serve(args: argparse.Namespace, config: DaemonConfig) -> int:
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT)
    ensure_token(config.token_file)
    try:
        asyncio.run(run(config))
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def pair(args: argparse.Namespace, config: DaemonConfig) -> int:
    token = write_new_token(config.token_file) if args.rotate else ensure_token(config.token_file)
    print(token)
    print(f"Paste this token into the LowKey extension's options (daemon: "
          f"ws://{LOOPBACK_ADDRESS}:{config.port}{WEBSOCKET_PATH}; token file: {config.token_file})."
          + (" Connections already open stay open; new ones need this token." if args.rotate else ""),
          file=sys.stderr)
    return EXIT_OK


def status(args: argparse.Namespace, config: DaemonConfig) -> int:
    url = f"http://{LOOPBACK_ADDRESS}:{config.port}{HEALTH_PATH}"
    paired = read_token(config.token_file) is not None
    plan = _plan(None)
    print(f"pairing token: {'present' if paired else 'none yet (run lowkey-daemon pair)'} "
          f"({config.token_file})")
    if plan is not None:
        print(f"service: {'installed' if plan.path.exists() else 'not installed'} ({plan.path})")
    try:
        with urllib.request.urlopen(url, timeout=STATUS_TIMEOUT_SECONDS) as response:
            health = json.load(response)
    except (OSError, ValueError) as error:
        print(f"daemon: not reachable at {url} ({getattr(error, 'reason', error)})")
        return EXIT_FAILED
    print(f"daemon: running at {url}, version {health.get('version')}, devices "
          f"{', '.join(health.get('devices', []))}, default preset {health.get('default_preset')}, "
          f"{health.get('queued')} queued, {health.get('running')} running, "
          f"{health.get('connections')} connections")
    budgets = health.get("face_budget") or {}
    if budgets:
        print("faces per attack batch: " + ", ".join(f"{device} {faces}" for device, faces in budgets.items()))
    return EXIT_OK


def install_service(args: argparse.Namespace, config: DaemonConfig) -> int:
    named = args.config or (Path(os.environ[CONFIG_PATH_ENV]) if os.environ.get(CONFIG_PATH_ENV) else None)
    plan = _plan(named, required=True)
    ensure_token(config.token_file)
    service.install(plan, enable=not args.no_enable)
    print(f"wrote {plan.path}")
    for step in plan.enable:
        print(("would run: " if args.no_enable else "ran: ") + " ".join(step.command))
    return EXIT_OK


def uninstall_service(args: argparse.Namespace, config: DaemonConfig) -> int:
    plan = _plan(args.config, required=True)
    if not service.uninstall(plan, disable=not args.no_enable):
        print(f"not installed ({plan.path} does not exist)")
        return EXIT_OK
    print(f"removed {plan.path}")
    return EXIT_OK


def _plan(config_path: Path | None, required: bool = False) -> service.ServicePlan | None:
    try:
        return service.service_plan(service.serve_command(config_path))
    except service.ServiceError:
        if required:
            raise
        return None
