"""Reader and lock-board drivers: see drivers/base.py for the interfaces, drivers/registry.py for the names."""
