"""The console (SPEC §12): the facilities team's web screen, served by `lockergw central` beside the JSON
API. Server-rendered Jinja2 pages, htmx for interaction and server-sent events for live parts; every asset
ships in this package. Routes are thin: every rule lives in central/services, shared with the API.
"""
