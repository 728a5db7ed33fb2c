"""Installed plugins, found through the ``lethe.plugins`` entry-point group.

A plugin module is imported only when a target needs its scheme or when
``lethe plugins`` lists every plugin, so a missing optional SDK breaks only
the targets that need it. The scheme of each entry point is learnt from the
plugin class, so the first look-up of a scheme imports plugins one by one
until one claims it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata

from agent.errors import UsageError
from plugins.base import Plugin, Target
from plugins.errors import MissingDependency

GROUP = "lethe.plugins"
EXTRA_PLUGINS_VARIABLE = "LETHE_EXTRA_PLUGINS"

#: The pip extra that installs each built-in plugin's SDK.
EXTRAS = {
    "aws-backups": "aws",
    "s3": "s3",
    "gcs": "gcs",
    "azure": "azure",
    "postgresql": "postgresql",
    "mysql": "mysql",
}


@dataclass
class PluginStatus:
    """One installed plugin as ``lethe plugins`` lists it."""

    name: str
    schemes: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    status: str = "ok"


@dataclass
class Registry:
    """Entry points by name, loaded lazily; tests add classes with :meth:`add`."""

    entry_points: dict[str, metadata.EntryPoint] = field(default_factory=dict)
    loaded: dict[str, type[Plugin]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_entry_points(cls) -> Registry:
        """Build the registry from installed entry points and ``LETHE_EXTRA_PLUGINS``.

        ``LETHE_EXTRA_PLUGINS`` contains comma-separated ``name=module:Class``
        values, for plugins under development or test plugins that are not
        installed as a distribution.
        """
        points = {point.name: point for point in metadata.entry_points(group=GROUP)}
        for value in filter(
            None, os.environ.get(EXTRA_PLUGINS_VARIABLE, "").split(",")
        ):
            name, _, reference = value.partition("=")
            if not reference:
                raise UsageError(
                    f"{EXTRA_PLUGINS_VARIABLE}: expected name=module:Class, got {value!r}"
                )
            points[name.strip()] = metadata.EntryPoint(
                name.strip(), reference.strip(), GROUP
            )
        return cls(entry_points=points)

    def add(self, plugin_class: type[Plugin]) -> None:
        """Register a plugin class directly, ahead of the entry points (tests)."""
        self.loaded[plugin_class.name] = plugin_class
        self.entry_points.pop(plugin_class.name, None)

    def plugin_for(self, target: Target) -> type[Plugin]:
        """Return the plugin class that handles the target's scheme.

        Raises UsageError naming the scheme when no plugin claims it, and
        MissingDependency naming the pip extra when the plugin that would
        claim it cannot be imported.
        """
        scheme = target.scheme
        for plugin_class in self.loaded.values():
            if scheme in plugin_class.schemes:
                return plugin_class
        for name in list(self.entry_points):
            plugin_class = self._load(name)
            if plugin_class is not None and scheme in plugin_class.schemes:
                return plugin_class
        hint = (
            f"; plugins that failed to load: {', '.join(sorted(self.failures))}"
            if self.failures
            else ""
        )
        raise UsageError(
            f"no installed plugin handles target {target.url!r} (scheme {scheme!r}); "
            f"run 'lethe plugins' to list the installed ones{hint}"
        )

    def statuses(self) -> Iterator[PluginStatus]:
        """Load every plugin and describe it, broken ones included.

        A plugin that loads but whose ``requires`` modules cannot be found is
        listed as unavailable, because plugins import their SDKs lazily.
        """
        for name in sorted(set(self.entry_points) | set(self.loaded)):
            plugin_class = self.loaded.get(name) or self._load(name)
            if plugin_class is None:
                yield PluginStatus(name, status=self.failures[name])
                continue
            capabilities = plugin_class.capabilities()
            status = PluginStatus(
                name,
                tuple(capabilities.get("schemes", ())),
                tuple(capabilities.get("methods", ())),
            )
            missing = _missing_module(plugin_class.requires)
            if missing is not None:
                status.status = _missing_module_status(name, missing)
            yield status

    def _load(self, name: str) -> type[Plugin] | None:
        if name in self.loaded:
            return self.loaded[name]
        if name in self.failures:
            return None
        point = self.entry_points[name]
        try:
            plugin_class = point.load()
        except MissingDependency as error:
            self.failures[name] = f"unavailable: {error}"
            return None
        except ImportError as error:
            self.failures[name] = _import_failure(name, point, error)
            return None
        except AttributeError:
            self.failures[name] = f"broken: {point.value} does not exist"
            return None
        self.loaded[name] = plugin_class
        return plugin_class


def _missing_module(names: tuple[str, ...]) -> str | None:
    """Return the first module that cannot be found, without importing it.

    ``find_spec`` imports the parent packages of a dotted name, which for
    the SDKs named here are light namespace packages.
    """
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return name
    return None


def _import_failure(name: str, point: metadata.EntryPoint, error: ImportError) -> str:
    missing = error.name or str(error)
    if missing == point.module:
        return f"unavailable: module {missing} is not part of this installation"
    return _missing_module_status(name, missing)


def _missing_module_status(name: str, missing: str) -> str:
    extra = EXTRAS.get(name)
    if extra:
        return f"unavailable: missing module {missing}; install with pip install 'lethe[{extra}]'"
    return f"unavailable: missing module {missing}"
