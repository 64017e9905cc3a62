"""The MQTT side of the gateway (SPEC §7): publisher, presence, requests."""
