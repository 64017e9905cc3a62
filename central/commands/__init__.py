"""Sub-commands of `lockergw central`; each module has `register(subparsers)` (see central.cli)."""
