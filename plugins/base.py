"""The contract every storage plugin implements.

The agent drives one job through these calls, per target:

    plugin = PluginClass(target, context)
    plugin.describe()                 -> TargetInfo (once, for plan and certificate)
    plugin.discover()                 -> Item, Item, ... (streamed)
    plugin.plan_item(item)            -> Decision (method or refusal)
    plugin.purge(batch)               -> PurgeResult per item of the batch
    plugin.complete()                 -> PurgeResult per target-wide step
    plugin.verify(batch)              -> Evidence per item of the batch
    plugin.close()

A plugin imports nothing from ``agent``. Everything it needs arrives in the
:class:`Target` and the :class:`JobContext`, and everything it reports leaves
as the dataclasses below. Only :mod:`plugins.errors` exceptions may cross
this boundary.
"""

from __future__ import annotations

import abc
import concurrent.futures
import enum
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar


class Method(str, enum.Enum):
    """Sanitization methods, named after NIST SP 800-88 where it names them."""

    CLEAR_OVERWRITE = "clear-overwrite"
    PURGE_CRYPTO = "purge-crypto"
    PURGE_FIRMWARE = "purge-firmware"
    DELETE_ALL_VERSIONS = "delete-all-versions"
    DELETE_AND_COMPACT = "delete-and-compact"
    MASK = "mask"
    WIPE_FREE_SPACE = "wipe-free-space"
    REMOVE_SNAPSHOTS = "remove-snapshots"
    LIFECYCLE = "lifecycle"

    @property
    def sp800_88_category(self) -> str:
        """The SP 800-88 category: "Clear", "Purge" or "Other"."""
        if self in (Method.CLEAR_OVERWRITE, Method.WIPE_FREE_SPACE):
            return "Clear"
        if self in (Method.PURGE_CRYPTO, Method.PURGE_FIRMWARE):
            return "Purge"
        return "Other"


@dataclass(frozen=True)
class Target:
    """A target URL as given by the user, with its per-target options.

    ``options`` contains the mapping under the target in the config file (for
    example ``endpoint_url`` or ``bypass_governance``); plugins validate the
    keys they read and raise :class:`~plugins.errors.InvalidTarget` on the rest.
    """

    url: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        """The URL scheme, with bare filesystem paths reported as ``path``."""
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme in ("", "file"):
            return "path"
        return parsed.scheme

    @property
    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.url)


@dataclass(frozen=True)
class Item:
    """One thing a plugin can destroy: a file, an object version, a row, a device.

    ``key`` is unique within the target and stable across runs, so the journal
    and a saved plan can refer to it. ``identity`` contains JSON-serialisable facts
    that change when the item changes (inode and mtime, ETag and version id,
    row primary key and a digest of the row); the agent compares it to detect a
    changed world before destroying anything. ``attributes`` carries facts for
    classification and holds (path, tags, metadata, table, column names); it
    must never carry the data itself, because plans and journals store it.
    A plugin sets ``attributes["copy"]`` (for example "snapshot" or "backup")
    on items that are copies of the selected data rather than the data
    itself; plans and certificates list those items with their outcome.
    ``label`` is what reports show; it may be personal data (a file name), so
    reports may mask it. File paths in ``key`` and ``attributes["path"]`` are
    in the printable form of :func:`escape_path`; :func:`unescape_path`
    returns the real path.
    """

    key: str
    kind: str
    size: int = 0
    identity: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or self.key


def escape_path(path: str) -> str:
    """Return a printable, reversible form of a path for keys and messages.

    Control characters and bytes that are not valid UTF-8 (surrogate
    escapes from :func:`os.fsdecode`) become ``\\xNN``. A backslash becomes
    ``\\\\``, so the mapping is one-to-one.
    """
    if path.isprintable() and "\\" not in path:
        return path
    parts = []
    for char in path:
        code = ord(char)
        if char == "\\":
            parts.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F or not char.isprintable():
            parts.append("".join(f"\\x{byte:02x}" for byte in char.encode("utf-8")))
        else:
            parts.append(char)
    return "".join(parts)


def unescape_path(key: str) -> str:
    """Invert :func:`escape_path`, returning the path as :func:`os.fsdecode` spells it."""
    if "\\" not in key:
        return key
    raw = bytearray()
    index = 0
    while index < len(key):
        char = key[index]
        if char == "\\" and key[index + 1] == "\\":
            raw += b"\\"
            index += 2
        elif char == "\\" and key[index + 1] == "x":
            raw.append(int(key[index + 2 : index + 4], 16))
            index += 4
        else:
            raw += char.encode("utf-8", "surrogateescape")
            index += 1
    return os.fsdecode(bytes(raw))


@dataclass(frozen=True)
class Refusal:
    """Why an item is not destroyed, in a stable ``reason`` code and plain words.

    ``reason`` is one of the codes in :data:`REFUSAL_REASONS` or a
    plugin-specific code; ``blocked_until`` is set when the block lifts on a
    known date (object lock, retention hold).
    """

    reason: str
    detail: str
    blocked_until: datetime | None = None


REFUSAL_REASONS = {
    "symlink": "symbolic link, never followed (its destination is never touched)",
    "hard-link": "file has hard links outside the target",
    "open-file": "file is open in a running process",
    "special-file": "FIFO, socket or device node",
    "mount-point": "mount point or another filesystem than the target's",
    "protected-path": "protected system path",
    "state-directory": "Lethe's state directory (journal, signing key, certificates)",
    "copy-on-write": "overwrite cannot reach every copy of the data",
    "object-lock": "object lock retention",
    "legal-hold": "legal hold",
    "hold": "retention or legal hold from the policy",
    "in-use": "device or file is in use",
    "not-supported": "no method available for this item",
    "permission": "permission denied",
    "not-empty": "directory keeps refused entries, so it stays",
    "copy-kept": "snapshot or backup of the selected data that the config does not allow removing",
}


@dataclass(frozen=True)
class Decision:
    """A plugin's plan for one item: a method, or a refusal.

    ``fingerprints`` are distinctive byte strings taken from the item's content
    and name at planning time; verification scans raw storage for them. They
    live in memory for the job only: the agent never writes them to the plan,
    the journal or the certificate (it writes their SHA-256 digests).
    A plugin may give a sequence that takes them on first use, so the work
    leaves the planning path.
    ``residual`` lists, in plain words, copies the method cannot reach.
    ``params`` carries method settings chosen at planning time (passes, key id).
    The agent adds two flags to ``params`` when it hands back an item that
    this process did not destroy: ``resumed`` (the job was restarted after
    the destroy step began, so the item may differ from its planned identity
    by that step alone) and ``recheck`` (``lethe verify`` repeats the rescan
    of a finished job). Verification then reports checks that only the
    destroying process could run, such as a read-back, as not run, unless
    the plugin saved what the check needs in :attr:`JobContext.checkpoints`.
    """

    method: Method | None = None
    refusal: Refusal | None = None
    residual: tuple[str, ...] = ()
    fingerprints: Sequence[bytes] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.method is None) == (self.refusal is None):
            raise ValueError("a Decision has exactly one of method and refusal")

    @property
    def permitted(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class PlannedItem:
    """An item together with the decision the shown plan made for it."""

    item: Item
    decision: Decision


@dataclass(frozen=True)
class PurgeResult:
    """The outcome of destroying one item, or of one target-wide step.

    ``status`` is ``purged`` (the destroy step completed; verification is still
    owed), ``blocked`` (the store refused for a lawful reason such as an object
    lock; ``refusal`` says which) or ``failed`` (``detail`` says what state
    remains). ``key`` is the item key, or a step name such as ``compact`` for
    results from :meth:`Plugin.complete`.
    """

    key: str
    status: str
    detail: str = ""
    bytes: int = 0
    method: Method | None = None
    refusal: Refusal | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("purged", "blocked", "failed"):
            raise ValueError(f"invalid PurgeResult status: {self.status!r}")


@dataclass(frozen=True)
class Check:
    """One verification check: its name, whether it passed, and what was seen.

    A check that could not run passes, with a ``detail`` that starts with
    "not run" and gives the reason. After a resume, such a check makes the
    job exit 1 instead of 0. A check that a setting turned off passes with a
    ``detail`` that starts with "off:". Certificates count both apart from
    the checks that ran.
    """

    name: str
    passed: bool
    detail: str = ""


#: Detail of a cloud key's decrypt check when the wrapped data key is not in
#: memory, because the key was destroyed by an earlier process.
NO_WRAPPED_KEY = (
    "not run: the wrapped data key is kept in memory only, and this process "
    "did not destroy the key (a resumed job)"
)


@dataclass(frozen=True)
class Evidence:
    """The independent rescan's findings for one item."""

    key: str
    checks: tuple[Check, ...]

    @property
    def verified(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


@dataclass(frozen=True)
class TargetInfo:
    """Facts about the target for the plan and the certificate.

    ``media`` contains SP 800-88 media information as far as the system knows it
    (media type, filesystem, device, model, serial, bucket, region, server).
    ``notes`` are plain-words statements for the plan (versioning state, what
    happens to the bucket itself). ``residual`` lists target-wide copies the
    plan cannot reach (journals, WAL archives, replicas, provider retention).
    """

    media: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    residual: tuple[str, ...] = ()


class CheckpointStore(Protocol):
    """Per-item progress records that outlive the process, for resumable destroy steps.

    A plugin whose destroy step is long (an overwrite of a whole device)
    saves how far it got, and a resumed job loads it to continue or verify.
    A plugin may also save a target-wide record under a key that none of
    its item records uses, such as the keys its plan chose to destroy in
    :meth:`Plugin.complete`, which a resumed job can no longer list.
    ``data`` must be JSON-serialisable. ``save`` commits before it returns,
    and both methods may be called from any thread. The agent keeps the
    records in the job journal and deletes them when the job finishes.
    """

    def load(self, key: str) -> Mapping[str, Any] | None:
        """Return the item's last saved record, or None."""

    def save(self, key: str, data: Mapping[str, Any] | None) -> None:
        """Replace the item's record; None deletes it."""


class MemoryCheckpoints:
    """A :class:`CheckpointStore` in memory, for runs without a journal (plugin tests)."""

    def __init__(self) -> None:
        self._records: dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def load(self, key: str) -> Mapping[str, Any] | None:
        with self._lock:
            return self._records.get(key)

    def save(self, key: str, data: Mapping[str, Any] | None) -> None:
        with self._lock:
            if data is None:
                self._records.pop(key, None)
            else:
                self._records[key] = data


@dataclass
class JobContext:
    """What the agent hands a plugin for one job.

    ``settings`` are the job-wide method settings (``passes``, ``final_zero``,
    ``readback``: "full" or a fraction, ``scan_device``). ``progress`` takes a
    count of bytes done; ``should_stop`` turns true after SIGTERM, and a plugin
    checks it between items and between passes. Before it returns, the
    plugin finishes or rolls back the item in flight, or saves a checkpoint
    in ``checkpoints`` and yields no result for the item, so that a resumed
    job purges it again from the checkpoint.
    """

    job_id: str = ""
    dry_run: bool = True
    settings: Mapping[str, Any] = field(default_factory=dict)
    progress: Callable[[int], None] = lambda done: None
    should_stop: Callable[[], bool] = lambda: False
    checkpoints: CheckpointStore = field(default_factory=MemoryCheckpoints)
    #: Paths the agent itself needs (its state directory with the journal,
    #: signing key and certificates); plugins refuse them like system paths.
    protected: tuple[str, ...] = ()


class Plugin(abc.ABC):
    """Base class of storage plugins; see the module docstring for the call order.

    Subclasses set ``name``, ``schemes`` and ``methods`` and register in the
    ``lethe.plugins`` entry-point group. The constructor only stores its
    arguments and validates the target's shape; network and disk access start
    in :meth:`describe` or :meth:`discover`.
    """

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    methods: ClassVar[tuple[Method, ...]]
    #: How many items the agent passes to one call of purge and verify,
    #: counted by :meth:`batch_weight`.
    batch_size: ClassVar[int] = 1
    #: Modules the plugin imports lazily (its SDK). ``lethe plugins`` lists
    #: the plugin as unavailable when one of them cannot be found.
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, target: Target, context: JobContext) -> None:
        self.target = target
        self.context = context

    @classmethod
    def canonical_target(cls, target: Target) -> Target:
        """Return the target in the form the journal and saved plans store.

        A plugin whose URLs can be relative (local paths) returns an absolute
        form here, so that a saved plan names the same thing from any
        working directory. Raises InvalidTarget for a malformed URL.
        """
        return target

    @abc.abstractmethod
    def describe(self) -> TargetInfo:
        """Return media facts, plan notes and target-wide residual risks.

        Raises TargetNotFound, AccessDenied or TargetUnreachable when the target
        cannot be inspected at all.
        """

    def batch_weight(self, attributes: Mapping[str, Any]) -> int:
        """Return how much of ``batch_size`` an item with these attributes takes.

        Every item counts 1 unless a plugin's items stand for several units
        of work (database items that group rows).
        """
        return 1

    @classmethod
    def covers(cls, outer: Target, inner: Target) -> bool:
        """Tell whether planning ``outer`` selects every item of ``inner``.

        Both targets are canonical. The agent then plans ``inner`` once, as
        part of ``outer``, instead of twice. The default compares URLs at a
        ``/`` boundary and requires equal options. A plugin overrides it when
        its prefixes select differently or its options change the selection.
        """
        if outer.options != inner.options:
            return False
        if inner.url == outer.url:
            return True
        prefix = outer.url if outer.url.endswith("/") else outer.url + "/"
        return inner.url.startswith(prefix)

    @abc.abstractmethod
    def discover(self) -> Iterator[Item]:
        """Yield every item the target selects, streaming, never as one list.

        Items that are refused are yielded too, so the plan can list them.
        Raises TargetNotFound, AccessDenied or TargetUnreachable.
        """

    @abc.abstractmethod
    def plan_item(self, item: Item) -> Decision:
        """Choose the method for an item, or refuse it with a reason.

        Reads nothing it would change. May raise ItemChanged if the item
        vanished between discovery and planning.
        """

    def plan_mask(self, item: Item, mask: Mapping[str, Any]) -> Decision:
        """Plan masking of an item that the policy keeps but wants masked.

        ``mask`` is the policy's mask spec (``fields`` and ``key_file``; see
        :mod:`plugins.masking`). A plugin that lists :attr:`Method.MASK`
        overrides this to run its own checks, take fingerprints of the values
        it will replace and return ``params["mask"]`` for :meth:`purge`. The
        default refuses the item as ``not-supported`` unless the plugin lists
        the method, in which case it plans it with the spec alone.
        """
        if Method.MASK not in self.methods:
            return Decision(
                refusal=Refusal(
                    "not-supported",
                    "the policy requests masking for this item, "
                    f"but the {self.name} plugin cannot mask",
                )
            )
        return Decision(method=Method.MASK, params={"mask": dict(mask)})

    @abc.abstractmethod
    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        """Destroy each permitted item of the batch and yield one result each.

        Before destroying, check the item still matches ``item.identity``
        and yield ``failed`` with ItemChanged's message when it does not. A
        failure of one item is a ``failed`` result, not an exception; raise
        only when the whole target became unusable (AccessDenied,
        TargetUnreachable).
        """

    def complete(self) -> Iterator[PurgeResult]:
        """Run target-wide steps after every batch (compaction, rescan loops)."""
        return iter(())

    @abc.abstractmethod
    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        """Rescan independently of the purge path and yield evidence per item.

        Uses fresh listings and reads, not the purge's own replies. Raw-byte
        scans use ``decision.fingerprints`` when they are present; an empty
        tuple (as after a resume) means the scan is reported as not run.
        """

    def verify_read_bytes(self, size: int) -> int:
        """Return the bytes :meth:`verify` reads back from items of ``size`` bytes in all.

        The engine sizes the verification progress bar with it. Plugins whose
        verify reports its reads through ``JobContext.progress`` override it.
        """
        return 0

    def close(self) -> None:
        """Release connections and clients; called once, also after errors."""

    @classmethod
    def capabilities(cls) -> Mapping[str, Any]:
        """Describe the plugin for ``lethe plugins``."""
        return {
            "schemes": list(cls.schemes),
            "methods": [method.value for method in cls.methods],
        }


def boolean_option(target: Target, name: str, default: bool = False) -> bool:
    """Return a true/false target option, rejecting any other value.

    YAML and URL options can arrive as strings such as "no" or "false", which
    Python's ``bool`` reads as true. A switch that widens what a purge touches
    must never be turned on by such a value.
    """
    from plugins.errors import InvalidTarget

    value = target.options.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidTarget(
            f"option {name} of target {target.url} must be true or false, got {value!r}"
        )
    return value


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Yield lists of at most ``size`` items, streaming."""
    batch: list[Any] = []
    for element in items:
        batch.append(element)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def plugin_batches(items: Iterable[Any], plugin: Plugin) -> Iterator[list[Any]]:
    """Yield batches for ``plugin.purge`` and ``plugin.verify``, streaming.

    A batch ends once the weights of its items (:meth:`Plugin.batch_weight`
    of their attributes) reach ``plugin.batch_size``, so an item that stands
    for many rows counts as many. Takes journal rows or planned items.
    """
    batch: list[Any] = []
    weight = 0
    for element in items:
        attributes = (
            element.item.attributes
            if isinstance(element, PlannedItem)
            else element.attributes
        )
        batch.append(element)
        weight += plugin.batch_weight(attributes)
        if weight >= plugin.batch_size:
            yield batch
            batch = []
            weight = 0
    if batch:
        yield batch


#: Nice value that :func:`start_side_thread` adds to a thread that yields
#: the processor.
SIDE_THREAD_NICE = 10

_Result = TypeVar("_Result")


def start_side_thread(
    call: Callable[[], _Result], name: str, yield_cpu: bool = False
) -> concurrent.futures.Future[_Result]:
    """Run ``call`` in a new thread, which ends with it, and return its future.

    With ``yield_cpu`` the thread lowers its own scheduling priority, where
    the system allows that per thread (Linux), so that a database server
    compacting at the same time gets the processor first. Such a thread
    suits work whose result is not needed at once.
    """

    def run() -> _Result:
        if yield_cpu:
            lower_thread_priority()
        return call()

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = executor.submit(run)
    # The worker thread ends once ``call`` returns.
    executor.shutdown(wait=False)
    return future


def lower_thread_priority() -> None:
    """Add :data:`SIDE_THREAD_NICE` to the calling thread's nice value, on Linux only.

    Elsewhere the call would change the whole process, so it does nothing.
    """
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        nice = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, nice + SIDE_THREAD_NICE)
    except OSError:
        # Where the system forbids it, the thread keeps its usual priority.
        pass
