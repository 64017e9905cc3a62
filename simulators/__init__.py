"""Device-side simulators: RDM6300 and serial-ascii readers and Kerong lock boards over pseudo-terminals.

`simulators.site.SimulatedSite` starts every simulated device of a configuration; `lockergw sim` wraps
it in a console and a control socket (`simulators.control`). See docs/simulators.md.
"""
