"""Configuration: YAML loaded with line numbers and validated into dataclasses.

Every error names the file, the line and the dotted key, and names the value
that was expected. The sections ``policy``, ``keystore`` and ``daemon`` belong to
other modules: each registers a validator with :func:`register_section`, and
:func:`load` passes it the raw node together with a :class:`Node` helper that
raises errors with the same file and line information.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ConfigError
from plugins.base import Target

#: Module that registers the validator of each delegated section. It is
#: imported when the section is present and no validator is registered yet.
SECTION_MODULES = {
    "policy": "agent.policy",
    "keystore": "agent.keystore",
    "daemon": "agent.daemon",
}

Validator = Callable[["Node"], Any]
_VALIDATORS: dict[str, Validator] = {}

_TOP_LEVEL = {"operator", "state_dir", "settings", "targets"}


def register_section(name: str, validator: Validator) -> None:
    """Register the validator of a top-level section such as ``policy``.

    ``validator`` receives a :class:`Node` for the section (whose ``value``
    is None when the section is absent) and returns the validated object,
    which :attr:`Config.sections` then stores under ``name``.
    """
    if name in _TOP_LEVEL:
        raise ValueError(f"section {name!r} is validated by agent.config itself")
    _VALIDATORS[name] = validator


def registered_sections() -> list[str]:
    return sorted(set(_VALIDATORS) | set(SECTION_MODULES))


class MarkedDict(dict):
    """A YAML mapping that remembers the line of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class MarkedList(list):
    """A YAML sequence that remembers the line of each element."""

    line: int = 0
    item_lines: list[int]


class _MarkedLoader(yaml.SafeLoader):
    """A safe loader that builds :class:`MarkedDict` and :class:`MarkedList`."""


def _construct_mapping(loader: _MarkedLoader, node: yaml.MappingNode) -> MarkedDict:
    loader.flatten_mapping(node)
    mapping = MarkedDict()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = line
    return mapping


def _construct_sequence(loader: _MarkedLoader, node: yaml.SequenceNode) -> MarkedList:
    sequence = MarkedList(
        loader.construct_object(child, deep=True) for child in node.value
    )
    sequence.line = node.start_mark.line + 1
    sequence.item_lines = [child.start_mark.line + 1 for child in node.value]
    return sequence


_MarkedLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)
_MarkedLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence
)
# Dates stay strings, so that a section validator reports an impossible date
# such as 2027-02-30 with its file and line; PyYAML's timestamp constructor
# would raise a bare ValueError instead.
_MarkedLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Node:
    """A value from the config file with its file, line and dotted key path.

    Validators read children through the typed getters, which raise
    :class:`ConfigError` with ``file:line: key: expected ...`` messages.
    """

    value: Any
    file: str
    line: int
    path: str

    def error(self, expected: str, key: str | None = None) -> ConfigError:
        """Build an error for this node, or for its child ``key``."""
        node = self.child(key) if key is not None else self
        shown = "" if node.value is None else f", got {_describe(node.value)}"
        return ConfigError(
            f"{node.file}:{node.line}: {node.where}: expected {expected}{shown}"
        )

    @property
    def where(self) -> str:
        """The dotted key path, or "top level" for the document itself."""
        return self.path or "top level"

    def child(self, key: str | int) -> Node:
        """Return the child node under ``key`` (a missing key has value None)."""
        path = f"{self.path}[{key}]" if isinstance(key, int) else _join(self.path, key)
        line = self.line
        value: Any = None
        if isinstance(self.value, MarkedList) and isinstance(key, int):
            value = self.value[key]
            line = self.value.item_lines[key]
        elif isinstance(self.value, Mapping) and key in self.value:
            value = self.value[key]
            line = getattr(self.value, "key_lines", {}).get(key, self.line)
        return Node(value, self.file, line, path)

    def is_present(self) -> bool:
        return self.value is not None

    def mapping(self, allowed: set[str] | None = None) -> Node:
        """Check that this node is a mapping (or absent) with only ``allowed`` keys."""
        if self.value is None:
            return Node(MarkedDict(), self.file, self.line, self.path)
        if not isinstance(self.value, Mapping):
            raise self.error("a mapping of keys to values")
        for key in self.value:
            if not isinstance(key, str):
                raise self.error(f"string keys, found key {key!r}")
            if allowed is not None and key not in allowed:
                choices = ", ".join(sorted(allowed))
                raise self.child(key).error_unknown(choices)
        return self

    def error_unknown(self, choices: str) -> ConfigError:
        return ConfigError(
            f"{self.file}:{self.line}: {self.where}: unknown key; expected one of {choices}"
        )

    def elements(self) -> list[Node]:
        """Return the elements of a sequence node (empty when absent)."""
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            raise self.error("a list")
        return [self.child(index) for index in range(len(self.value))]

    def string(
        self, key: str, default: str | None = None, required: bool = False
    ) -> str | None:
        node = self.child(key)
        if node.value is None:
            if required:
                raise ConfigError(
                    f"{self.file}:{self.line}: {node.where}: missing required key"
                )
            return default
        if not isinstance(node.value, str) or not node.value.strip():
            raise node.error("a non-empty string")
        return node.value

    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        node = self.child(key)
        if node.value is None:
            return default
        if not isinstance(node.value, bool):
            raise node.error("true or false")
        return node.value

    def integer(
        self,
        key: str,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        node = self.child(key)
        if node.value is None:
            return default
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            raise node.error("an integer")
        if minimum is not None and maximum is not None:
            if not minimum <= node.value <= maximum:
                raise node.error(f"an integer from {minimum} to {maximum}")
        if minimum is not None and node.value < minimum:
            raise node.error(f"an integer of at least {minimum}")
        return node.value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        node = self.child(key)
        if node.value is None:
            return default
        values = []
        for element in node.elements():
            if not isinstance(element.value, str) or not element.value:
                raise element.error("a non-empty string")
            values.append(element.value)
        return tuple(values)


#: Most overwrite passes a job may ask for. One random pass is what NIST SP
#: 800-88 Clear needs on current disks; 35 is the longest historical scheme
#: (Gutmann), and larger values only multiply the run time.
MAX_PASSES = 35


@dataclass(frozen=True)
class Organization:
    name: str = ""
    address: str = ""
    contact: str = ""


@dataclass(frozen=True)
class Operator:
    """The person and organization named on certificates of sanitization."""

    name: str = ""
    title: str = ""
    organization: Organization = field(default_factory=Organization)

    def unset_keys(self) -> list[str]:
        """Return the config keys of the fields that are empty, such as ``operator.name``."""
        values = {
            "operator.name": self.name,
            "operator.title": self.title,
            "operator.organization.name": self.organization.name,
            "operator.organization.address": self.organization.address,
            "operator.organization.contact": self.organization.contact,
        }
        return [key for key, value in values.items() if not value]


@dataclass(frozen=True)
class Settings:
    """Job-wide method settings passed to every plugin as ``JobContext.settings``."""

    passes: int = 1
    final_zero: bool = False
    #: "full" or the fraction of each file that is read back, in (0, 1].
    readback: str | float = "full"
    #: None means: scan the raw device when it is readable (as root).
    scan_device: bool | None = None
    protected_paths: tuple[str, ...] = ()

    def as_plugin_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "passes": self.passes,
            "final_zero": self.final_zero,
            "readback": self.readback,
        }
        if self.scan_device is not None:
            settings["scan_device"] = self.scan_device
        if self.protected_paths:
            settings["protected_paths"] = list(self.protected_paths)
        return settings


@dataclass(frozen=True)
class Config:
    """A validated configuration file, or the defaults when there is none."""

    path: str | None = None
    digest: str | None = None
    operator: Operator = field(default_factory=Operator)
    state_dir: str | None = None
    settings: Settings = field(default_factory=Settings)
    targets: tuple[Target, ...] = ()
    sections: Mapping[str, Any] = field(default_factory=dict)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; with no path, return the defaults."""
    if path is None:
        return Config(
            sections=_validate_sections(Node(MarkedDict(), "<defaults>", 0, ""))
        )
    file = os.fspath(path)
    try:
        raw = Path(file).read_bytes()
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {file}: {error.strerror}; check the path given with -c"
        ) from error
    try:
        document = yaml.load(raw, Loader=_MarkedLoader)
    except yaml.reader.ReaderError as error:
        raise ConfigError(_reader_message(file, raw, error)) from error
    except yaml.YAMLError as error:
        raise ConfigError(_yaml_message(file, error)) from error
    root = Node(document if document is not None else MarkedDict(), file, 1, "")
    sections = _TOP_LEVEL | set(registered_sections())
    if not isinstance(root.value, Mapping):
        raise root.error(f"a mapping with the keys {', '.join(sorted(sections))}")
    root = root.mapping(sections)
    return Config(
        path=file,
        digest=hashlib.sha256(raw).hexdigest(),
        operator=_operator(root.child("operator")),
        state_dir=root.string("state_dir"),
        settings=_settings(root.child("settings")),
        targets=_targets(root.child("targets")),
        sections=_validate_sections(root),
    )


def _operator(node: Node) -> Operator:
    node = node.mapping({"name", "title", "organization"})
    organization = node.child("organization").mapping({"name", "address", "contact"})
    return Operator(
        name=node.string("name", ""),
        title=node.string("title", ""),
        organization=Organization(
            name=organization.string("name", ""),
            address=organization.string("address", ""),
            contact=organization.string("contact", ""),
        ),
    )


def _settings(node: Node) -> Settings:
    node = node.mapping(
        {
            "passes",
            "final_zero",
            "readback",
            "scan_device",
            "protected_paths",
        }
    )
    for path_node in node.child("protected_paths").elements():
        if not isinstance(path_node.value, str) or not path_node.value.startswith("/"):
            raise path_node.error("an absolute path")
    return Settings(
        passes=node.integer("passes", 1, minimum=1, maximum=MAX_PASSES),
        final_zero=node.boolean("final_zero", False),
        readback=_readback(node.child("readback")),
        scan_device=node.boolean("scan_device", None),
        protected_paths=node.strings("protected_paths"),
    )


def check_plan_settings(settings: Any, path: str) -> None:
    """Check the settings stored in a plan file as a config's are checked.

    Raises ConfigError naming the plan file and the key, because a plan
    file edited by hand with a recomputed hash reaches the purge otherwise.
    """
    # JSON keeps no line numbers, so every error names line 1 of the file.
    _settings(Node(settings, path, 1, "settings"))


def _readback(node: Node) -> str | float:
    if node.value is None or node.value == "full":
        return "full"
    if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
        raise node.error('"full" or a fraction between 0 and 1')
    if not 0 < node.value <= 1:
        raise node.error('"full" or a fraction between 0 and 1')
    return float(node.value)


def _targets(node: Node) -> tuple[Target, ...]:
    targets = []
    for element in node.elements():
        if isinstance(element.value, str):
            targets.append(Target(element.value))
            continue
        element = element.mapping({"url", "options"})
        url = element.string("url", required=True)
        options = element.child("options").mapping()
        targets.append(Target(url, _plain(options.value)))
    return tuple(targets)


def _validate_sections(root: Node) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for name in registered_sections():
        node = root.child(name)
        if name not in _VALIDATORS and name in SECTION_MODULES:
            _import_section_module(SECTION_MODULES[name])
        validator = _VALIDATORS.get(name)
        if validator is not None:
            sections[name] = validator(node)
        elif node.value is not None:
            sections[name] = _plain(node.value)
    return sections


def _import_section_module(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise


def _plain(value: Any) -> Any:
    """Convert marked YAML containers into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: _plain(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_plain(child) for child in value]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _yaml_message(file: str, error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is not None:
        return f"{file}:{mark.line + 1}: invalid YAML: {problem}"
    return f"{file}: invalid YAML: {problem}"


def _reader_message(file: str, raw: bytes, error: yaml.reader.ReaderError) -> str:
    """Name the line and byte of text that is not UTF-8 or not allowed in YAML."""
    if error.encoding != "unicode":
        # Decoding failed, and the position counts bytes.
        line = raw[: error.position].count(b"\n") + 1
        return (
            f"{file}:{line}: not valid UTF-8 (byte 0x{error.character:02x} at offset "
            f"{error.position}); save the file as UTF-8"
        )
    # PyYAML's reader names the encoding "unicode" for a character that
    # decoded but is not allowed in YAML; the position then counts characters.
    text = raw.decode("utf-8", "replace")
    line = text[: error.position].count("\n") + 1
    return (
        f"{file}:{line}: invalid YAML: character U+{error.character:04X} is not "
        "allowed in YAML text; remove it"
    )
