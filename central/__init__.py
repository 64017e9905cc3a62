"""Central: where an estate's gateway events land for good, are verified and repaired, where alerts are
raised and credentials issued (SPEC §11), and where facilities staff work in the console (SPEC §12).

It knows the gateways only through the MQTT contract of SPEC §7 and reuses the gateway's own canonical
JSON, event hash and request signing (`gateway.events`, `gateway.mqtt.signing`) — never a second copy.
"""
