"""Central's rules for reading and acting on the estate, called by the HTTP API (and later the CLI and the
console): each module takes a SQLAlchemy connection and plain values, and returns the models in
`central.services.models`. Routes stay thin; nothing here knows about HTTP.
"""
