"""The daemon's configuration: one typed, frozen place, read from one TOML file and overridden by
environment variables and command-line flags (in that order of precedence, flags win).

    port = 47321
    device = "auto"                  # or "cpu", "cuda:0", or a list: one worker per device
    preset = "standard"
    allowed_origins = ["chrome-extension://<id>", "moz-extension://*"]

    [limits]
    max_image_bytes = 52428800

    [presets.quick]                  # a custom preset: an engine preset plus overrides
    base = "fast"
    steps = 5

Every top-level and `[limits]` field `name` can be set with the environment variable
`LOWKEY_<NAME>` and the flag `--<name-with-dashes>`; list fields take comma-separated values there.
The file is `<user config dir>/daemon.toml` unless `LOWKEY_CONFIG` or `--config` names another.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lowkey_engine.images.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from lowkey_engine.settings import PRESETS, ProtectSettings

#: TCP port on 127.0.0.1 (unassigned by IANA). 0 picks a free port (tests, benchmarks).
DEFAULT_PORT = 47321

#: The Chromium extension's ID, pinned by the public key in its manifest's "key" (the ID is the
#: first 32 hex digits of sha256(DER public key) mapped 0-f -> a-p).
CHROMIUM_EXTENSION_ID = "lahampmkkjgenmpklbngemnflhgehnao"
#: Origins allowed to open the socket. Firefox gives every install a random moz-extension UUID,
#: so Firefox is allowed by scheme ("scheme://*" matches any host of that scheme); the pairing
#: token is what tells LowKey's extension from another one there.
DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = (f"chrome-extension://{CHROMIUM_EXTENSION_ID}",
                                            "moz-extension://*")

CONFIG_FILE_NAME = "daemon.toml"
TOKEN_FILE_NAME = "pairing-token"
#: Prefix of the environment variables that override the file.
ENV_PREFIX = "LOWKEY_"
CONFIG_PATH_ENV = "LOWKEY_CONFIG"
CONFIG_DIR_ENV = "LOWKEY_CONFIG_DIR"
_APP_DIR_NAME = {"linux": "lowkey", "darwin": "LowKey", "win32": "LowKey"}

_MEBIBYTE = 2 ** 20
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration file, an environment variable or a flag has a bad value."""


def user_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where LowKey keeps its per-user files: $LOWKEY_CONFIG_DIR, else the platform's place
    ($XDG_CONFIG_HOME/lowkey or ~/.config/lowkey; ~/Library/Application Support/LowKey;
    %APPDATA%\\LowKey). environ: default os.environ."""
    environ = os.environ if environ is None else environ
    if environ.get(CONFIG_DIR_ENV):
        return Path(environ[CONFIG_DIR_ENV])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / _APP_DIR_NAME["darwin"]
    if sys.platform == "win32":
        base = environ.get("APPDATA") or str(Path.home() / "AppData" / "Roaming")
        return Path(base) / _APP_DIR_NAME["win32"]
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / _APP_DIR_NAME["linux"]


@dataclass(frozen=True)
class Limits:
    """What one client, and all together, may ask of the daemon."""

    #: Largest image payload, bytes (at most the engine's own cap, DEFAULT_MAX_BYTES).
    max_image_bytes: int = DEFAULT_MAX_BYTES
    #: Most pixels (width * height) in an image (at most the engine's cap, DEFAULT_MAX_PIXELS).
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Longest JSON header, bytes.
    max_header_bytes: int = 16 * 1024
    #: Jobs one connection may have queued or running at once.
    max_jobs_per_connection: int = 8
    #: Jobs waiting for a worker, all connections together.
    max_queued_jobs: int = 64
    #: Image bytes waiting for a worker, all connections together, MiB.
    max_queued_megabytes: int = 1024
    #: How long a new connection has to send its hello, seconds.
    hello_timeout_seconds: float = 10.0
    #: How long an authenticated connection may go without sending a message while it has no job
    #: queued or running, seconds; then the daemon closes it (4408). A running job is never cut
    #: off: the time counts from the later of the last message and the last job's answer.
    idle_timeout_seconds: float = 600.0
    #: Result cache size (protected image bytes kept), MiB; 0 turns the cache off.
    cache_megabytes: int = 256
    #: Pixels of the photos one attack batch holds together, millions: each waits at full size in
    #: memory until its batch is done. A photo larger than this runs alone.
    batch_megapixels: int = 100

    @property
    def max_frame_bytes(self) -> int:
        """Largest WebSocket message read at all; above it the socket closes with 1009."""
        return 4 + self.max_header_bytes + self.max_image_bytes

    @property
    def max_queued_bytes(self) -> int:
        return self.max_queued_megabytes * _MEBIBYTE

    @property
    def cache_bytes(self) -> int:
        return self.cache_megabytes * _MEBIBYTE

    @property
    def batch_pixels(self) -> int:
        return self.batch_megapixels * 1_000_000

    def for_clients(self) -> dict[str, int | float]:
        """The limits a client needs to know (sent in `welcome`)."""
        return {"max_image_bytes": self.max_image_bytes, "max_pixels": self.max_pixels,
                "max_header_bytes": self.max_header_bytes,
                "max_jobs_per_connection": self.max_jobs_per_connection,
                "idle_timeout_seconds": self.idle_timeout_seconds}


@dataclass(frozen=True)
class DaemonConfig:
    port: int = DEFAULT_PORT
    #: Torch devices, one worker each: "auto" (CUDA when present, else CPU), "cpu", "cuda:N".
    device: tuple[str, ...] = ("auto",)
    #: Preset used when a protect message names none.
    preset: str = "standard"
    allowed_origins: tuple[str, ...] = DEFAULT_ALLOWED_ORIGINS
    #: Where the pairing token lives; default <user config dir>/pairing-token.
    token_file: Path = field(default_factory=lambda: user_config_dir() / TOKEN_FILE_NAME)
    #: Torch CPU threads per worker; 0 = as many as there are idle cores when each photo starts
    #: (lowkey_engine.runtime: torch's default of every core collapses on a busy machine).
    torch_threads: int = 0
    #: Faces one attack batch holds, taken from several queued photos (a photo with more faces
    #: runs alone): 0 = measured on each device at start (the smallest batch within 5 % of the
    #: best time a face: lowkey_engine.batching.measure_face_budget); 1 = one photo at a time.
    face_budget: int = 0
    #: Faces of the first batch after the worker was idle, so that the first photo of an album
    #: comes back about as soon as it would alone; 0 = the first batch is as large as the others.
    first_batch_faces: int = 1
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    #: Custom presets from the file's [presets.NAME] tables (engine presets are always there).
    custom_presets: Mapping[str, ProtectSettings] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def presets(self) -> dict[str, ProtectSettings]:
        """Every preset a client may name: the engine's, then the custom ones (which may
        redefine an engine preset)."""
        return {**PRESETS, **self.custom_presets}

    def replace(self, **changes: Any) -> "DaemonConfig":
        return dataclasses.replace(self, **changes)


def load_config(path: Path | None = None, *, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, str] | None = None) -> DaemonConfig:
    """The configuration: defaults < TOML file < environment < overrides (flag values as strings,
    keyed by field name). path None: $LOWKEY_CONFIG, else <user config dir>/daemon.toml; a
    default path that does not exist means defaults, a named one that does not exist is an error."""
    environ = os.environ if environ is None else environ
    named = path or (Path(environ[CONFIG_PATH_ENV]) if environ.get(CONFIG_PATH_ENV) else None)
    file_path = named or user_config_dir(environ) / CONFIG_FILE_NAME
    table: dict[str, Any] = {}
    if file_path.exists():
        try:
            table = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read {file_path}: {error}") from None
    elif named:
        raise ConfigError(f"config file {file_path} does not exist")

    values, limit_values = _split_file_table(table, file_path)
    values.setdefault("token_file", user_config_dir(environ) / TOKEN_FILE_NAME)
    custom = _custom_presets(table.get("presets", {}), file_path)
    for source, strings in (("environment", _from_environ(environ)), ("flag", overrides or {})):
        for name, text in strings.items():
            if text is None:
                continue
            target = limit_values if name in _LIMIT_FIELDS else values
            if name not in _LIMIT_FIELDS and name not in _TOP_FIELDS:
                raise ConfigError(f"unknown {source} setting {name!r}")
            target[name] = _from_string(name, text, source)
    try:
        limits = Limits(**{k: _coerce(k, v, _LIMIT_FIELDS[k], str(file_path))
                           for k, v in limit_values.items()})
        return DaemonConfig(**{k: _coerce(k, v, _TOP_FIELDS[k], str(file_path))
                               for k, v in values.items()}, limits=limits, custom_presets=custom)
    except TypeError as error:
        raise ConfigError(str(error)) from None


def setting_names() -> dict[str, type]:
    """Every overridable setting (top-level and limits) with its type: flags and env vars."""
    return {**_TOP_FIELDS, **_LIMIT_FIELDS}


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


# --------------------------------------------------------------------------- internals

def _field_types(cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in skip}


_TOP_FIELDS = _field_types(DaemonConfig, skip=("limits", "custom_presets"))
_LIMIT_FIELDS = _field_types(Limits)


def _split_file_table(table: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    values = {k: v for k, v in table.items() if k not in ("limits", "presets")}
    unknown = set(values) - set(_TOP_FIELDS)
    limits = table.get("limits", {})
    if not isinstance(limits, dict):
        raise ConfigError(f"{path}: [limits] must be a table")
    unknown |= {f"limits.{k}" for k in set(limits) - set(_LIMIT_FIELDS)}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return values, dict(limits)


def _custom_presets(tables: Any, path: Path) -> dict[str, ProtectSettings]:
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [presets] must hold tables, [presets.NAME]")
    settings_fields = _field_types(ProtectSettings, skip=("preset", "device"))
    presets = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: presets.{name} must be a table")
        overrides = dict(table)
        base = overrides.pop("base", "standard")
        if base not in PRESETS:
            raise ConfigError(f"{path}: presets.{name}: unknown base {base!r}; "
                              f"choose one of {', '.join(PRESETS)}")
        unknown = set(overrides) - set(settings_fields)
        if unknown:
            raise ConfigError(f"{path}: presets.{name}: unknown setting(s) {', '.join(sorted(unknown))}")
        defaults = PRESETS[base]
        typed = {k: _preset_value(f"{path}: presets.{name}.{k}", v, getattr(defaults, k))
                 for k, v in overrides.items()}
        presets[name] = defaults.replace(preset=name, **typed)
    return presets


def _preset_value(where: str, value: Any, default: Any) -> Any:
    """A preset override from TOML, checked against the type of the base preset's value."""
    if isinstance(value, list):
        value = tuple(value)
    numeric = (int, float)
    same_kind = (type(value) is type(default)
                 or (isinstance(default, float) and type(value) is int)
                 or (default is None and isinstance(value, numeric) and not isinstance(value, bool))
                 or (isinstance(default, float) and value is None))
    if not same_kind:
        raise ConfigError(f"{where} must be like {default!r}, not {value!r}")
    return float(value) if isinstance(default, float) and value is not None else value


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[env_name(name)] for name in setting_names() if env_name(name) in environ}


def _from_string(name: str, text: str, source: str) -> Any:
    """A flag or environment string as the setting's type."""
    kind = setting_names()[name]
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind == tuple[str, ...]:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if kind is Path:
            return Path(text).expanduser()
        return text
    except ValueError:
        raise ConfigError(f"{source} setting {name}={text!r} is not a valid {kind.__name__}") from None


def _coerce(name: str, value: Any, kind: Any, where: str) -> Any:
    """A TOML (or already converted) value as the field's type; ConfigError when it is not one."""
    if kind == tuple[str, ...]:
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif kind is Path and isinstance(value, (str, Path)):
        return Path(value).expanduser()
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: {name} must be {getattr(kind, '__name__', str(kind))}, "
                      f"not {value!r}")


def _validate(config: DaemonConfig) -> None:
    limits = config.limits
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port {config.port} is not in 0..65535")
    if not config.device:
        raise ConfigError("device must name at least one device")
    if config.preset not in config.presets:
        raise ConfigError(f"preset {config.preset!r} is unknown; choose one of {', '.join(config.presets)}")
    for origin in config.allowed_origins:
        if "://" not in origin or origin.endswith("/"):
            raise ConfigError(f"allowed origin {origin!r} must look like scheme://host or scheme://*")
    if config.torch_threads < 0:
        raise ConfigError("torch_threads must be 0 (the idle cores at each photo) or more")
    if config.face_budget < 0:
        raise ConfigError("face_budget must be 0 (measured at start) or more")
    if config.first_batch_faces < 0:
        raise ConfigError("first_batch_faces must be 0 (as large as the other batches) or more")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    for name in _LIMIT_FIELDS:
        value = getattr(limits, name)
        if value < 0 or (value == 0 and name != "cache_megabytes"):
            raise ConfigError(f"limits.{name} must be positive, not {value}")
    if limits.max_image_bytes > DEFAULT_MAX_BYTES:
        raise ConfigError(f"limits.max_image_bytes is above the engine's cap of {DEFAULT_MAX_BYTES}")
    if limits.max_pixels > DEFAULT_MAX_PIXELS:
        raise ConfigError(f"limits.max_pixels is above the engine's cap of {DEFAULT_MAX_PIXELS}")
