"""Errors a plugin may raise across the contract in :mod:`plugins.base`.

A plugin translates every SDK, driver and OS exception into one of these
before it leaves the plugin, and logs the original at debug level with its
traceback. The agent maps each class to an exit code. Messages name the
resource that failed and say what the user can do next; they never contain
credentials or the content of the data being destroyed.
"""

from __future__ import annotations


class PluginError(Exception):
    """Base class of every error a plugin raises."""


class InvalidTarget(PluginError):
    """The target URL or its options are malformed or unsupported."""


class TargetNotFound(PluginError):
    """The path, bucket, container, device or table does not exist."""


class AccessDenied(PluginError):
    """The credentials or the process lack a permission the step needs."""


class TargetUnreachable(PluginError):
    """The endpoint, server or device could not be reached."""


class ItemChanged(PluginError):
    """An item differs from what the plan recorded, so it was not touched."""


class PurgeFailed(PluginError):
    """A destroy step failed part-way; the message says what state remains."""


class NotSupported(PluginError):
    """The plugin cannot perform the requested method on this target."""


class MissingDependency(PluginError):
    """An optional package or system tool the plugin needs is not installed."""
