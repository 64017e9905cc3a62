"""`lockergw central --config central.toml`: one central worker.

Opens (creates or upgrades) the database, refuses a second worker on one SQLite database (exit 2),
runs the MQTT worker with its periodic tasks and the HTTP API (`central.api.app`) in the same event
loop. SIGTERM or SIGINT stops gracefully: nothing held is lost, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from central.config import CentralSettings, load_central_config
from central.context import CentralContext
from central.database import DatabaseError, engine_url, open_database
from gateway.commands.common import fail
from gateway.config import ConfigError
from gateway.logs import setup_logging
from gateway.mqtt.link import LinkError

log = logging.getLogger("lockergw.central")


class AlreadyRunning(Exception):
    pass


class MissingDependency(Exception):
    pass


def main(args: argparse.Namespace) -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack to the log
    setup_logging(getattr(args, "log_format", "text"), getattr(args, "log_level", "info"))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # not a line per migration step at every start
    try:
        settings = load_central_config(args.config)
    except ConfigError as exc:
        for fault in exc.faults:
            print(fault, file=sys.stderr)
        return 2
    try:
        with sqlite_single_worker(settings.central.database):
            engine = open_database(settings.central.database)
            try:
                return asyncio.run(serve(settings, engine))
            finally:
                engine.dispose()
    except AlreadyRunning as exc:
        return fail(str(exc))
    except (DatabaseError, LinkError, MissingDependency) as exc:
        return fail(str(exc))


@contextlib.contextmanager
def sqlite_single_worker(url: str) -> Iterator[None]:
    """SQLite has one worker: hold an advisory lock beside the database file for the process's life."""
    parsed = make_url(engine_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    path = Path(f"{parsed.database}.worker-lock")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle: IO[str] = open(path, "a+")  # noqa: SIM115 (held for the process's life)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise AlreadyRunning(
                f"another central worker (pid {holder}) uses {parsed.database}: SQLite allows one worker; "
                "use PostgreSQL for several"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


async def serve(settings: CentralSettings, engine: Engine) -> int:
    from central.worker import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with Worker(settings, engine) as worker:
        log.info("central worker %s started (%s)", settings.central.id, engine.url.render_as_string(hide_password=True))
        server = _http_server(settings, CentralContext(settings, engine, worker.requests, worker))
        http = asyncio.create_task(server.serve(), name="central http")
        await stop.wait()
        log.info("stopping central worker %s", settings.central.id)
        server.should_exit = True
        await asyncio.gather(http, return_exceptions=True)
        await worker.stop()
    log.info("central worker %s stopped", settings.central.id)
    return 0


def _http_server(settings: CentralSettings, context: CentralContext) -> Any:
    try:
        import uvicorn

        from central.api.app import create_app
    except ModuleNotFoundError as exc:
        raise MissingDependency(
            f"the HTTP API needs {exc.name}, which is not installed: pip install 'locker-gateway[central]'"
        ) from None
    app = create_app(context)

    class EmbeddedServer(uvicorn.Server):
        """uvicorn in central's event loop; the worker handles SIGTERM, not uvicorn."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    host, port = settings.http.host_port()
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning", "lifespan": "on"}
    if settings.http.cert_file:
        options |= {"ssl_certfile": settings.http.cert_file, "ssl_keyfile": settings.http.key_file or None}
    return EmbeddedServer(uvicorn.Config(app, **options))
