"""Shared fixtures: `broker.plugin` gives a private Mosquitto per test (see tests/broker/), and
`databases.plugin` a fresh PostgreSQL or SQLite database for central (see tests/databases/)."""

pytest_plugins = ["broker.plugin", "databases.plugin"]
