"""lockergw: the edge gateway of a locker key management system."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("locker-gateway")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
