"""Central's HTTP API (SPEC §11): `create_app(context)` builds the FastAPI application."""
