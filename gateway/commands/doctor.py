"""`lockergw doctor --config FILE`: is this site ready to run?"""

from __future__ import annotations

import argparse

from gateway.commands.common import add_config_option, load_or_report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("doctor", help="check the configuration, ports, broker and file permissions")
    add_config_option(parser)
    parser.add_argument("--no-broker", action="store_true", help="skip the broker connection test")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    settings = load_or_report(args.config)
    if settings is None:
        print("FAIL configuration: fix the lines above, then run lockergw doctor again")
        return 2
    from gateway.doctor import run_checks

    findings = run_checks(settings, broker=not args.no_broker)
    for finding in findings:
        print(finding.line())
    problems = sum(1 for f in findings if not f.ok)
    print(f"{problems} problem(s) found" if problems else "all checks passed")
    return 1 if problems else 0
