"""Shared fixtures. `broker.plugin` provides a private Mosquitto per test (see tests/broker/)."""

pytest_plugins = ["broker.plugin"]
