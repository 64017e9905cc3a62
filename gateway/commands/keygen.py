"""`lockergw keygen --out FILE`: a new request-signing key (SPEC §7), written with mode 0600.

The key is 32 random bytes written as 64 hex characters (the gateway keys its HMAC with the file's
text, stripped of surrounding whitespace). Give the same file to `mqtt.hmac_key_file` on the gateway
and to whatever signs its requests (central's `[signing]`); one key per gateway is best.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from gateway.commands.common import fail

KEY_BYTES = 32


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("keygen", help="write a new request-signing key (mode 0600) for mqtt.hmac_key_file")
    parser.add_argument("--out", required=True, metavar="FILE", help="where to write it (refused if it exists)")
    parser.add_argument("--force", action="store_true", help="replace an existing key file")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    path = Path(args.out)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        return fail(f"{path} exists; keep it, or pass --force to replace it (every signer then needs the new key)")
    except OSError as exc:
        return fail(f"{path}: {exc.strerror}")
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    print(f"wrote a request-signing key to {path} (mode 0600)")
    print(f'set  hmac_key_file = "{path.resolve()}"  in [mqtt], and give the same key to whoever signs requests')
    return 0
