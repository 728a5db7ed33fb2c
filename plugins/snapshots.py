"""Volume snapshots that share a ``path`` target's data: btrfs, LVM and ZFS.

A snapshot keeps every block its volume held when it was taken, so data that
was overwritten or deleted in place comes back with the first restore. This
module lists the snapshots of the volume under a path from each tool's
output, plans them (removal only when the target option
``remove_snapshots`` names them or a matching pattern) and removes them.
A snapshot always covers a whole subvolume, logical volume or dataset, so
removing it destroys more than the selection; the plan says so.

The files plugin calls this module from its discovery, planning, purge and
verification; it imports nothing from the agent.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from plugins.base import Check, Decision, Item, Method, PurgeResult, Refusal
from plugins.errors import MissingDependency, TargetUnreachable

log = structlog.get_logger(__name__).bind(plugin="files")

KIND = "snapshot"
#: Item kind of a snapshot source that could not be listed.
UNLISTED_KIND = "snapshot-listing"
#: Debian package of each tool, named in error messages.
PACKAGES = {
    "btrfs": "btrfs-progs",
    "lvs": "lvm2",
    "lvremove": "lvm2",
    "zfs": "zfsutils-linux",
}
#: Inode number of the root directory of every btrfs subvolume.
BTRFS_SUBVOLUME_ROOT_INODE = 256
_TIMEOUT = 120


@dataclass(frozen=True)
class Snapshot:
    """One snapshot of the volume under a target, as its tool lists it.

    ``name`` is what ``remove_snapshots`` patterns match and what messages
    show: the path below the mount point for btrfs, ``vg/lv`` for LVM and
    ``pool/dataset@snap`` for ZFS. ``ident`` is the tool's stable id (UUID,
    GUID or creation time) that distinguishes a recreated snapshot of the same
    name. ``size`` is None when the tool cannot tell it.
    """

    tool: str
    name: str
    origin: str
    ident: str
    created: str | None
    size: int | None
    path: str | None = None

    def item(self) -> Item:
        facts = {
            "copy": "snapshot",
            "tool": self.tool,
            "snapshot": self.name,
            "origin": self.origin,
            "created": self.created,
            "size": self.size,
            "covers": covers(self),
        }
        if self.path is not None:
            facts["path"] = self.path
        return Item(
            key=f"{KIND}:{self.tool}:{self.name}",
            kind=KIND,
            size=self.size or 0,
            identity={"tool": self.tool, "id": self.ident},
            attributes=facts,
            label=f"{self.tool} snapshot {self.name}",
        )


def covers(snapshot: Snapshot) -> str:
    """Describe in plain words what else a snapshot contains besides the selection."""
    volume = {"btrfs": "subvolume", "lvm": "logical volume", "zfs": "dataset"}[
        snapshot.tool
    ]
    return (
        f"{snapshot.tool} snapshot {snapshot.name} holds the whole {volume} "
        f"{snapshot.origin} as it was when taken, not only the selected files; "
        "removing it destroys every file in it"
    )


# -- running the tools ------------------------------------------------------


def run_tool(*argv: str) -> str:
    """Run a snapshot tool and return its standard output.

    Raises MissingDependency when the tool is not on PATH and
    TargetUnreachable when it exits with an error (its message included).
    """
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except FileNotFoundError:
        package = PACKAGES.get(argv[0], argv[0])
        raise MissingDependency(
            f"the {argv[0]} command is not installed or not on PATH; "
            f"install {package} so snapshots can be listed and removed"
        ) from None
    except subprocess.TimeoutExpired:
        raise TargetUnreachable(
            f"{' '.join(argv)} did not finish within {_TIMEOUT} s"
        ) from None
    if completed.returncode != 0:
        log.debug("snapshot tool failed", argv=list(argv), stderr=completed.stderr)
        message = completed.stderr.strip().splitlines()
        raise TargetUnreachable(
            f"{' '.join(argv)} failed with exit code {completed.returncode}: "
            f"{message[-1] if message else 'no message'}"
        )
    return completed.stdout


# -- btrfs --------------------------------------------------------------------


def subvolume_root(path: str, mount_point: str) -> str:
    """Return the root directory of the btrfs subvolume that contains ``path``."""
    current = path if os.path.isdir(path) else os.path.dirname(path)
    while True:
        status = os.lstat(current)
        if status.st_ino == BTRFS_SUBVOLUME_ROOT_INODE or current == mount_point:
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return current
        current = parent


def parse_btrfs_show(text: str) -> dict[str, str]:
    """Parse ``btrfs subvolume show`` into its ``Key: value`` fields.

    btrfs-progs 6.2 offers no JSON for this command, so the text is read.
    """
    fields: dict[str, str] = {}
    lines = text.splitlines()
    if lines:
        fields["path"] = lines[0].strip()
    for line in lines[1:]:
        key, separator, value = line.strip().partition(":")
        if separator and value.strip():
            fields[key.strip()] = value.strip()
    return fields


_LIST_FIELDS = re.compile(
    r"^ID (?P<id>\d+) gen \d+ cgen \d+ top level \d+ otime (?P<otime>.+?) "
    r"parent_uuid (?P<parent>\S+) uuid (?P<uuid>\S+) path (?P<path>.*)$"
)


def parse_btrfs_list(text: str) -> list[dict[str, str]]:
    """Parse ``btrfs subvolume list -s -u -q`` lines into dictionaries."""
    entries = []
    for line in text.splitlines():
        match = _LIST_FIELDS.match(line.strip())
        if match:
            entries.append(match.groupdict())
    return entries


def btrfs_time(text: str | None) -> str | None:
    """Convert a btrfs or lvs time into ISO 8601 in UTC.

    ``subvolume show`` prints ``2026-12-04 16:49:45 +0000``; ``subvolume
    list`` prints the local time without a zone, which is read as local.
    """
    if not text or text == "-":
        return None
    for layout in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S"):
        try:
            parsed = datetime.strptime(text, layout)
        except ValueError:
            continue
        return parsed.astimezone(UTC).isoformat()
    return text


def btrfs_snapshots(path: str, mount_point: str, mount_root: str) -> list[Snapshot]:
    """List the snapshots of the btrfs subvolume holding ``path``."""
    root = subvolume_root(path, mount_point)
    source = parse_btrfs_show(run_tool("btrfs", "subvolume", "show", root))
    uuid = source.get("UUID")
    if not uuid:
        raise TargetUnreachable(f"btrfs subvolume show {root} printed no UUID")
    listing = run_tool("btrfs", "subvolume", "list", "-s", "-u", "-q", mount_point)
    prefix = mount_root.strip("/")
    snapshots = []
    for entry in parse_btrfs_list(listing):
        if entry["parent"] != uuid:
            continue
        relative = entry["path"]
        if prefix and not relative.startswith(prefix + "/"):
            local = None  # outside the mounted subvolume: not reachable here
        else:
            local = os.path.join(mount_point, relative[len(prefix) :].lstrip("/"))
        snapshots.append(
            Snapshot(
                tool="btrfs",
                name=relative,
                origin=root,
                ident=entry["uuid"],
                created=btrfs_time(entry["otime"]),
                size=btrfs_size(local) if local else None,
                path=local,
            )
        )
    return snapshots


def btrfs_size(path: str) -> int | None:
    """Return the bytes a btrfs snapshot references (``filesystem du``)."""
    # NOTE: du walks the whole snapshot, which takes long on large trees.
    try:
        text = run_tool("btrfs", "filesystem", "du", "-s", "--raw", path)
    except TargetUnreachable:
        return None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0].isdigit():
            return int(fields[0])
    return None


# -- LVM ----------------------------------------------------------------------

LVS_FIELDS = "lv_name,vg_name,lv_path,lv_dm_path,origin,lv_time,lv_size,lv_uuid,lv_attr"


def parse_lvs(text: str) -> list[dict[str, str]]:
    """Parse ``lvs --reportformat json`` into one dictionary per volume."""
    document = json.loads(text)
    volumes = []
    for report in document.get("report", []):
        volumes.extend(report.get("lv", []))
    return volumes


def lvm_time(text: str) -> str | None:
    """Convert lvs's ``2024-05-02 10:11:12 +0000`` into ISO 8601."""
    return btrfs_time(text)


def lvm_snapshots_from(
    volumes: Sequence[dict[str, str]], device: str
) -> list[Snapshot]:
    """Pick the snapshots whose origin is the logical volume at ``device``."""
    real = os.path.realpath(device)
    origin = None
    for volume in volumes:
        paths = {volume.get("lv_path", ""), volume.get("lv_dm_path", "")}
        if device in paths or real in {os.path.realpath(p) for p in paths if p}:
            origin = volume
            break
    if origin is None:
        return []
    snapshots = []
    for volume in volumes:
        if volume.get("vg_name") != origin["vg_name"]:
            continue
        if volume.get("origin") != origin["lv_name"]:
            continue
        size = volume.get("lv_size", "").rstrip("B")
        snapshots.append(
            Snapshot(
                tool="lvm",
                name=f"{volume['vg_name']}/{volume['lv_name']}",
                origin=f"{origin['vg_name']}/{origin['lv_name']}",
                ident=volume.get("lv_uuid", ""),
                created=lvm_time(volume.get("lv_time", "")),
                size=int(size) if size.isdigit() else None,
            )
        )
    return snapshots


def lvm_snapshots(device: str) -> list[Snapshot]:
    output = run_tool(
        "lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
        "-o", LVS_FIELDS,
    )  # fmt: skip
    return lvm_snapshots_from(parse_lvs(output), device)


# -- ZFS ----------------------------------------------------------------------


def parse_zfs_list(text: str, dataset: str) -> list[Snapshot]:
    """Parse ``zfs list -H -p -t snapshot -o name,guid,creation,used,referenced``."""
    snapshots = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 5:
            continue
        name, guid, creation, _, referenced = fields
        if name.partition("@")[0] != dataset:
            continue
        created = (
            datetime.fromtimestamp(int(creation), UTC).isoformat()
            if creation.isdigit()
            else None
        )
        snapshots.append(
            Snapshot(
                tool="zfs",
                name=name,
                origin=dataset,
                ident=guid,
                created=created,
                size=int(referenced) if referenced.isdigit() else None,
            )
        )
    return snapshots


def zfs_snapshots(dataset: str) -> list[Snapshot]:
    output = run_tool(
        "zfs", "list", "-H", "-p", "-t", "snapshot", "-d", "1",
        "-o", "name,guid,creation,used,referenced", dataset,
    )  # fmt: skip
    return parse_zfs_list(output, dataset)


# -- discovery, planning, removal -------------------------------------------


def is_device_mapper(source: str) -> bool:
    return source.startswith("/dev/mapper/") or os.path.basename(
        os.path.realpath(source)
    ).startswith("dm-")


def list_snapshots(
    path: str, fstype: str, mount_point: str, mount_root: str, source: str
) -> list[Snapshot]:
    """Return the snapshots of the volume under ``path`` (empty when none apply).

    Raises MissingDependency or TargetUnreachable when a tool that applies
    to this filesystem cannot list them.
    """
    if fstype == "btrfs":
        return btrfs_snapshots(path, mount_point, mount_root)
    if fstype == "zfs":
        return zfs_snapshots(source)
    if is_device_mapper(source):
        return lvm_snapshots(source)
    return []


def discover(
    path: str, fstype: str, mount_point: str, mount_root: str, source: str
) -> Iterator[Item]:
    """Yield one item per snapshot, or one refused item when listing failed."""
    try:
        snapshots = list_snapshots(path, fstype, mount_point, mount_root, source)
    except (MissingDependency, TargetUnreachable) as error:
        log.warning("snapshots could not be listed", error=str(error))
        yield Item(
            key=f"{UNLISTED_KIND}:{mount_point}",
            kind=UNLISTED_KIND,
            attributes={
                "copy": "snapshot",
                "refusal": {
                    "reason": "not-supported",
                    "detail": f"cannot list snapshots of {mount_point}: {error}. "
                    "Snapshots of this volume may still hold the selected data",
                },
            },
            label=f"snapshots of {mount_point}",
        )
        return
    for snapshot in snapshots:
        yield snapshot.item()


def plan(item: Item, patterns: Sequence[str]) -> Decision:
    """Permit removal when a ``remove_snapshots`` pattern matches, else refuse."""
    refusal = item.attributes.get("refusal")
    if refusal:
        return Decision(refusal=Refusal(refusal["reason"], refusal["detail"]))
    name = item.attributes["snapshot"]
    candidates = [name]
    if item.attributes.get("path"):
        candidates.append(item.attributes["path"])
    if not any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns):
        return Decision(
            refusal=Refusal(
                "copy-kept",
                f"snapshot {name} ({item.attributes['tool']}) holds a copy of the "
                "selected data and is kept, because the target option "
                "remove_snapshots names no pattern that matches it",
            )
        )
    return Decision(
        method=Method.REMOVE_SNAPSHOTS,
        residual=(item.attributes["covers"],),
        params={"tool": item.attributes["tool"]},
    )


def _current(item: Item, mount: tuple[str, str, str, str]) -> Snapshot | None:
    """Find the planned snapshot again by its name; None when it is gone."""
    _, mount_point, mount_root, source = mount
    origin = item.attributes["origin"]
    if item.attributes["tool"] == "btrfs":
        found = btrfs_snapshots(origin, mount_point, mount_root)
    elif item.attributes["tool"] == "zfs":
        found = zfs_snapshots(origin)
    else:
        found = lvm_snapshots(source)
    for snapshot in found:
        if snapshot.name == item.attributes["snapshot"]:
            return snapshot
    return None


def remove(item: Item, mount: tuple[str, str, str, str]) -> PurgeResult:
    """Remove one planned snapshot after checking it is still the planned one.

    ``mount`` is (filesystem type, mount point, mount root, source device).
    """
    name = item.attributes["snapshot"]
    try:
        current = _current(item, mount)
    except (MissingDependency, TargetUnreachable) as error:
        return PurgeResult(
            item.key,
            "failed",
            f"cannot list snapshot {name}: {error}; nothing was removed",
        )
    if current is None:
        return PurgeResult(
            item.key,
            "failed",
            f"snapshot {name} disappeared between plan and purge; nothing was "
            "removed. Plan again to see the current snapshots",
        )
    if current.ident != item.identity["id"]:
        return PurgeResult(
            item.key,
            "failed",
            f"snapshot {name} was replaced after planning (id {current.ident}, "
            f"planned {item.identity['id']}); it was not removed",
        )
    try:
        _delete(current)
    except (MissingDependency, TargetUnreachable) as error:
        return PurgeResult(
            item.key, "failed", f"removing snapshot {name} failed: {error}"
        )
    log.info("snapshot removed", snapshot=name, tool=current.tool)
    return PurgeResult(
        item.key,
        "purged",
        f"removed {current.tool} snapshot {name}",
        bytes=current.size or 0,
        method=Method.REMOVE_SNAPSHOTS,
        facts={"tool": current.tool, "id": current.ident, "created": current.created},
    )


def _delete(snapshot: Snapshot) -> None:
    if snapshot.tool == "btrfs":
        if snapshot.path is None:
            raise TargetUnreachable(
                f"snapshot {snapshot.name} is outside the mounted subvolume; mount "
                "the top-level subvolume to remove it"
            )
        run_tool("btrfs", "subvolume", "delete", "--commit-each", snapshot.path)
    elif snapshot.tool == "zfs":
        run_tool("zfs", "destroy", snapshot.name)
    else:
        run_tool("lvremove", "--yes", snapshot.name)


def settle(mount_point: str) -> None:
    """Wait until btrfs has freed the blocks of deleted subvolumes."""
    run_tool("btrfs", "subvolume", "sync", mount_point)


def verify(item: Item, mount: tuple[str, str, str, str]) -> Check:
    """Relist the snapshots and check the removed one is not among them."""
    name = item.attributes["snapshot"]
    try:
        current = _current(item, mount)
    except (MissingDependency, TargetUnreachable) as error:
        return Check("snapshot-gone", False, f"cannot relist snapshots: {error}")
    if current is not None:
        return Check("snapshot-gone", False, f"snapshot {name} is still listed")
    return Check("snapshot-gone", True, f"snapshot {name} is no longer listed")
