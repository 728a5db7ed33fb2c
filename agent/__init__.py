"""Lethe's storage-neutral core: CLI, config, plan, engine, journal, certificates."""

from importlib import metadata

try:
    __version__ = metadata.version("lethe")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"
