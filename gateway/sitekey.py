"""The site key: 32 random bytes in `state_dir/site.key` that turn card numbers into `uid_hash` (SPEC §7).

Raw card numbers never leave the gateway; events and responses carry the HMAC-SHA256 of the canonical
uid under this key instead. The key is made once, on first start, readable by its owner only, and
written atomically: a crash or a second process starting at the same moment never leaves a short or
half-written key, and both end up with the same one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SITE_KEY_FILE = "site.key"
SITE_KEY_BYTES = 32


class SiteKeyError(Exception):
    """The site key file exists but cannot be used; the message says which file and why."""


def load_or_create_site_key(state_dir: Path) -> bytes:
    """Read the site key, creating it (mode 0600) if this is the first start."""
    path = Path(state_dir) / SITE_KEY_FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{SITE_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(SITE_KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # link() fails if another process got there first; then its key wins and ours is dropped.
            os.link(temporary, path)
        except FileExistsError:
            pass
        else:
            _fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != SITE_KEY_BYTES:
        raise SiteKeyError(f"{path}: expected {SITE_KEY_BYTES} bytes, found {len(key)} (restore it from a backup)")
    return key


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def uid_hash(key: bytes, uid: str) -> str:
    """The published stand-in for a card number: hex HMAC-SHA256 of the canonical uid."""
    return hmac.new(key, uid.encode("utf-8"), hashlib.sha256).hexdigest()
