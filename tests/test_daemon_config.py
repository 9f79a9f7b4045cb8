"""Daemon configuration layering (daemon/config.py) and the auth building blocks (daemon/auth.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest

from lowkey_daemon import auth, config
from lowkey_daemon.config import ConfigError, DaemonConfig, load_config
from lowkey_engine.settings import PRESETS


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path):
    loaded = load_config(environ={config.CONFIG_DIR_ENV: str(tmp_path)})
    assert loaded.port == config.DEFAULT_PORT
    assert loaded.token_file == tmp_path / config.TOKEN_FILE_NAME
    assert loaded.allowed_origins == config.DEFAULT_ALLOWED_ORIGINS
    assert loaded.presets.keys() == PRESETS.keys()


def test_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path / "d.toml", """
        port = 5000
        preset = "fast"
        device = ["cpu"]
        allowed_origins = ["chrome-extension://abc"]
        [limits]
        max_queued_jobs = 9
        hello_timeout_seconds = 2
    """)
    from_file = load_config(path, environ={})
    assert (from_file.port, from_file.preset, from_file.device) == (5000, "fast", ("cpu",))
    assert from_file.limits.max_queued_jobs == 9 and from_file.limits.hello_timeout_seconds == 2.0
    environ = {"LOWKEY_PORT": "6000", "LOWKEY_MAX_QUEUED_JOBS": "11",
               "LOWKEY_ALLOWED_ORIGINS": "chrome-extension://x, moz-extension://*"}
    from_env = load_config(path, environ=environ)
    assert from_env.port == 6000 and from_env.limits.max_queued_jobs == 11
    assert from_env.allowed_origins == ("chrome-extension://x", "moz-extension://*")
    from_flags = load_config(path, environ=environ, overrides={"port": "7000", "max_queued_jobs": None})
    assert from_flags.port == 7000 and from_flags.limits.max_queued_jobs == 11


def test_config_file_named_by_environment(tmp_path):
    path = write(tmp_path / "elsewhere.toml", "port = 4321\n")
    assert load_config(environ={config.CONFIG_PATH_ENV: str(path)}).port == 4321


def test_custom_preset_from_file(tmp_path):
    path = write(tmp_path / "d.toml", """
        preset = "quick"
        [presets.quick]
        base = "fast"
        steps = 1
        jpeg_quality = [70, 80]
        epsilon = 0.02
    """)
    loaded = load_config(path, environ={})
    quick = loaded.presets["quick"]
    assert (quick.preset, quick.steps, quick.jpeg_quality, quick.epsilon) == ("quick", 1, (70, 80), 0.02)
    assert quick.step_size == PRESETS["fast"].step_size       # the rest comes from the base
    assert loaded.preset == "quick"


@pytest.mark.parametrize("text, fragment", [
    ("prot = 1\n", "unknown setting"),
    ("[limits]\nmax_everything = 1\n", "limits.max_everything"),
    ("port = 'eighty'\n", "port must be int"),
    ("port = 70000\n", "not in 0..65535"),
    ("preset = 'turbo'\n", "unknown"),
    ("allowed_origins = ['https://example.com/']\n", "scheme://host"),
    ("[limits]\nmax_jobs_per_connection = 0\n", "must be positive"),
    ("[limits]\nmax_pixels = 60000000\n", "engine's cap"),
    ("[presets.x]\nbase = 'medium'\n", "unknown base"),
    ("[presets.x]\nstepz = 3\n", "unknown setting"),
    ("[presets.x]\nsteps = 'many'\n", "must be like"),
    ("port = [\n", "cannot read"),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(write(tmp_path / "d.toml", text), environ={})


def test_idle_timeout_is_a_limit_like_the_others(tmp_path):
    assert DaemonConfig().limits.idle_timeout_seconds == 600.0
    path = write(tmp_path / "d.toml", "[limits]\nidle_timeout_seconds = 90\n")
    assert load_config(path, environ={}).limits.idle_timeout_seconds == 90.0
    from_env = load_config(path, environ={"LOWKEY_IDLE_TIMEOUT_SECONDS": "2.5"})
    assert from_env.limits.idle_timeout_seconds == 2.5
    from_flag = load_config(path, environ={}, overrides={"idle_timeout_seconds": "7"})
    assert from_flag.limits.idle_timeout_seconds == 7.0
    with pytest.raises(ConfigError, match="idle_timeout_seconds must be positive"):
        load_config(write(tmp_path / "zero.toml", "[limits]\nidle_timeout_seconds = 0\n"), environ={})


def test_bad_environment_value_and_missing_named_file(tmp_path):
    with pytest.raises(ConfigError, match="port='x' is not a valid int"):
        load_config(environ={config.CONFIG_DIR_ENV: str(tmp_path), "LOWKEY_PORT": "x"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})


def test_default_chromium_origin_is_the_extension_pinned_by_its_manifest_key():
    assert f"chrome-extension://{config.CHROMIUM_EXTENSION_ID}" in DaemonConfig().allowed_origins
    manifest = Path(__file__).resolve().parents[1] / "extension" / "manifest.json"
    if not manifest.exists():
        pytest.skip("extension/manifest.json is not there yet")
    der = base64.b64decode(json.loads(manifest.read_text(encoding="utf-8"))["key"])
    digest = hashlib.sha256(der).hexdigest()[:32]
    assert "".join(chr(ord("a") + int(c, 16)) for c in digest) == config.CHROMIUM_EXTENSION_ID


# --------------------------------------------------------------------------- auth

def test_token_is_created_once_private_and_rotated(tmp_path):
    path = tmp_path / "cfg" / "pairing-token"
    first = auth.ensure_token(path)
    assert len(first) >= 43 and auth.ensure_token(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == auth.TOKEN_FILE_MODE
    assert stat.S_IMODE(path.parent.stat().st_mode) == auth.TOKEN_DIR_MODE
    rotated = auth.write_new_token(path)
    assert rotated != first and auth.read_token(path) == rotated
    assert stat.S_IMODE(path.stat().st_mode) == auth.TOKEN_FILE_MODE
    assert [p.name for p in path.parent.iterdir()] == ["pairing-token"]   # no staging file left


def test_token_comparison():
    assert auth.token_matches("abc", "abc")
    assert not auth.token_matches("abd", "abc")
    assert not auth.token_matches("", "abc")
    assert not auth.token_matches("abc", None)
    assert not auth.token_matches("ü", "abc")


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:4000", True), ("localhost:4000", True), ("LOCALHOST:4000", True),
    ("127.0.0.1:4001", False), ("127.0.0.1", False), ("evil.example:4000", False),
    ("localhost.evil.example:4000", False), ("[::1]:4000", False), ("", False), (None, False),
])
def test_host_check(host, allowed):
    assert auth.host_allowed(host, 4000) is allowed


@pytest.mark.parametrize("origin, allowed", [
    ("chrome-extension://abcdefghijklmnopabcdefghijklmnop", True),
    ("moz-extension://0e5c3c2a-1111-4a4a-9b9b-123456789abc", True),
    ("chrome-extension://pppppppppppppppppppppppppppppppp", False),   # another extension
    ("https://social.example", False),                                # a web page
    ("http://127.0.0.1:4000", False),
    ("moz-extension://", False), ("moz-extension://a/b", False),
    ("null", False), ("", False), (None, False),
])
def test_origin_check(origin, allowed):
    allow_list = ("chrome-extension://abcdefghijklmnopabcdefghijklmnop", "moz-extension://*")
    assert auth.origin_allowed(origin, allow_list) is allowed
