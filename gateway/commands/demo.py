"""`lockergw demo`: gateway + simulators on config/demo.toml, a scripted school morning, shown live."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from gateway.commands.common import fail, load_or_report
from gateway.config import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="run the gateway on simulated hardware with a scripted scenario")
    parser.add_argument("--config", default=None, metavar="FILE", help="default: config/demo.toml")
    parser.add_argument("--speed", type=float, default=1.0, help="run the scenario this many times faster")
    parser.add_argument("--plain", action="store_true", help="plain lines instead of the live picture")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        return fail("--speed must be more than 0")
    path = args.config or str(_default_config_path())
    settings = load_or_report(path)
    if settings is None:
        return 2
    # A private directory per run (config/demo.toml names /tmp/lockergw-demo): no collision between users.
    with tempfile.TemporaryDirectory(prefix="lockergw-demo-") as private:
        return _run(args, _relocate(settings, Path(private)))


def _default_config_path() -> Path:
    from gateway.commands.demo_scenario import default_config_path

    return default_config_path()


def _relocate(settings: Settings, root: Path) -> Settings:
    from gateway.commands.demo_scenario import DEMO_ROOT, relocate

    return relocate(settings, DEMO_ROOT, root)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands.demo_scenario import run_demo
    from gateway.commands.demo_view import DemoView

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lockergw").setLevel(logging.WARNING)
    plain = args.plain or not sys.stdout.isatty()
    if plain:
        asyncio.run(run_demo(settings, None, args.speed, printer=lambda line: print(line, flush=True)))
        return 0
    from rich.live import Live

    with Live(auto_refresh=False, screen=True, transient=False) as live:

        async def show(view: DemoView) -> None:
            live.update(view.render(live.console.size.height), refresh=True)

        asyncio.run(run_demo(settings, show, args.speed))
    return 0
