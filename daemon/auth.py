"""Who may talk to the daemon: the pairing token, allowed Origins, and the Host check.

Three independent checks, all required for a WebSocket:
- Host: the request names the loopback address and the port it arrived on (DNS rebinding: a web
  page whose domain resolves to 127.0.0.1 still sends its own domain as Host).
- Origin: an allow-listed extension origin (a web page sends its own origin; browsers do not let
  pages forge it).
- Token: the first message carries the pairing token (a local process can forge Origin, but
  cannot read the 0600 token file of another user).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

#: Random bytes in a pairing token (256 bits), written URL-safe base64 (43 characters).
TOKEN_BYTES = 32
#: The token file is readable and writable by its owner only.
TOKEN_FILE_MODE = 0o600
#: The config directory it lives in is the owner's only.
TOKEN_DIR_MODE = 0o700
#: Host names that mean this machine's loopback interface (the daemon binds 127.0.0.1 only).
LOOPBACK_HOST_NAMES = ("127.0.0.1", "localhost")
#: An allowed-origin entry ending in this matches every host of its scheme.
ANY_HOST = "*"


# --------------------------------------------------------------------------- pairing token

def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def read_token(path: Path) -> str | None:
    """The stored token, or None when there is none yet."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return token or None


def ensure_token(path: Path) -> str:
    """The stored token, created (random, mode 0600) on first use."""
    return read_token(path) or write_new_token(path)


def write_new_token(path: Path) -> str:
    """Replace the token with a fresh one. The file is created 0600 before the secret is written
    and swapped in atomically, so no reader sees a half-written or world-readable token."""
    path.parent.mkdir(mode=TOKEN_DIR_MODE, parents=True, exist_ok=True)
    token = new_token()
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKEN_FILE_MODE)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(token + "\n")
        os.chmod(staging, TOKEN_FILE_MODE)   # in case a umask or ACL widened it
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return token


def token_matches(offered: str, stored: str | None) -> bool:
    """Constant-time comparison (no timing hint about how much of the token was right)."""
    if stored is None:
        return False
    return hmac.compare_digest(offered.encode("utf-8"), stored.encode("utf-8"))


# --------------------------------------------------------------------------- HTTP checks

def host_allowed(host: str | None, port: int) -> bool:
    """`Host` names the loopback interface and the port the request arrived on, exactly."""
    if not host:
        return False
    return host.lower() in {f"{name}:{port}" for name in LOOPBACK_HOST_NAMES}


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """`Origin` is one of `allowed` (exact), or matches an entry "scheme://*" (any host of that
    scheme, e.g. Firefox's per-install moz-extension UUIDs). No Origin is never allowed."""
    if not origin or origin == "null":
        return False
    for entry in allowed:
        if entry.endswith("://" + ANY_HOST):
            scheme = entry[: -len(ANY_HOST)]
            host = origin[len(scheme):]
            if origin.startswith(scheme) and host and "/" not in host:
                return True
        elif origin == entry:
            return True
    return False
