"""Local files (``path`` targets): overwrite in place, remove, rescan the device.

A target is a file or a directory tree on a local filesystem. Each regular
file is overwritten over its allocated extents (holes stay holes) with an
AES-128-CTR keystream, optionally more passes and a final zero pass, read
back, renamed to a random name of the same length, truncated and unlinked.
Directories are renamed and removed after their contents. Verification
checks that every path is gone, that the read-back matched, and scans the
raw block device for fingerprints of every file's content and name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import string
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog

from plugins._files import mounts as mountinfo
from plugins._files.copies import Copies, field_values
from plugins._files.mask import is_mask_copy, mask_copy_refusal
from plugins._files.openfiles import OpenFiles
from plugins._files.overwrite import random_bytes
from plugins._files.paths import (
    PROTECTED_EXACT,
    PROTECTED_TREES,
    escape_path,
    is_within,
    path_url,
    protected_reason,
    state_directory_reason,
    target_path,
    unescape_path,
)
from plugins._files.walk import Walk, identity, make_item, symlink_item
from plugins._files.extents import data_regions, shared_extents
from plugins.base import (
    Check,
    Decision,
    Evidence,
    Item,
    JobContext,
    Method,
    PlannedItem,
    Plugin,
    PurgeResult,
    Refusal,
    Target,
    TargetInfo,
    boolean_option,
)
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    ItemChanged,
    PluginError,
    TargetNotFound,
    TargetUnreachable,
)
from plugins.scan import WINDOWS_PER_ITEM, content_fingerprints, token_fingerprints

log = structlog.get_logger(__name__)

OPTIONS = {
    "cross_filesystems",
    "wipe_free_space",
    "keep_root",
    "remove_snapshots",
    "backups",
}
_NAME_ALPHABET = string.ascii_lowercase + string.digits
#: Most overwrite passes accepted; the agent's config enforces the same bound.
MAX_PASSES = 35
_NAME_SET = frozenset(_NAME_ALPHABET)
# Bytes from 252 up are dropped, because 252 is the largest multiple of 36
# below 256, so that no character of the alphabet is favoured.
_NAME_TABLE = bytes(ord(_NAME_ALPHABET[byte % 36]) for byte in range(256))
_NAME_REJECTED = bytes(range(252, 256))
#: Files up to this many allocated bytes are read whole for fingerprints;
#: larger files are sampled at evenly spread offsets.
WHOLE_READ_LIMIT = 1024 * 1024
_SAMPLE = 4096
#: Fingerprints kept between a file's classification and its plan_item.
_EARLY_FINGERPRINTS_LIMIT = 1024
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FilesPlugin(Plugin):
    """Overwrite-in-place purge of files and directory trees on local filesystems."""

    name = "files"
    schemes = ("path",)
    methods = (Method.CLEAR_OVERWRITE, Method.WIPE_FREE_SPACE, Method.MASK)
    batch_size = 2048

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        unknown = set(target.options) - OPTIONS
        if unknown:
            raise InvalidTarget(
                f"unknown option(s) {', '.join(sorted(unknown))} for path target "
                f"{escape_path(target.url)}; valid options: {', '.join(sorted(OPTIONS))}"
            )
        self.root = target_path(target)
        self.cross_filesystems = boolean_option(target, "cross_filesystems")
        self.keep_root = boolean_option(target, "keep_root")
        self.wipe_free_space = boolean_option(target, "wipe_free_space")
        self.log = log.bind(
            plugin=self.name, target=escape_path(self.root), job=context.job_id
        )
        self._root_status: os.stat_result | None = None
        self._mounts: list[mountinfo.Mount] = []
        self._mount_points: set[str] = set()
        self._mount_by_directory: dict[str, mountinfo.Mount | None] = {}
        #: Fingerprints read while a file was classified, by path, with the
        #: identity they were read under; plan_item takes them out again.
        self._early_fingerprints: dict[str, tuple[dict[str, int], list[bytes]]] = {}
        self._params: dict[str, Any] | None = None
        self._open = OpenFiles()
        self._symlinks: dict[str, list[tuple[str, int]]] = {}
        self._readback: dict[str, tuple[bool, str]] = {}
        self._purged_fingerprints: dict[str, tuple[bytes, ...]] = {}
        self._purged_devices: dict[str, int] = {}
        #: Inode number and link paths of each purged item, so that the scan
        #: never counts a purged file among the live ones.
        self._purged_files: dict[str, tuple[int, list[str]]] = {}
        self._scan: dict[str, Any] | None = None
        #: Whether each directory seen allows removing its entries.
        self._writable_directories: dict[str, bool] = {}
        #: Protected trees and exact paths, and whether each directory seen
        #: lies in a protected tree, for _protected_file_reason.
        self._protected_trees: tuple[str, ...] | None = None
        self._protected_names: frozenset[str] = frozenset()
        self._protected_directories: dict[str, bool] = {}
        #: leftover_candidates of each directory, listed once per verify batch.
        self._leftover_listings: dict[
            str, dict[tuple[int, int], list[tuple[str, int]]]
        ] = {}
        # Snapshots and backups of the selected data outside the target.
        self.copies = Copies(self)

    @classmethod
    def canonical_target(cls, target: Target) -> Target:
        """Store the absolute path with ``..`` and parent symlinks resolved."""
        return Target(path_url(target_path(target)), target.options)

    @classmethod
    def covers(cls, outer: Target, inner: Target) -> bool:
        """Tell whether ``outer``'s walk reaches every file of ``inner``.

        Without cross_filesystems the walk stops at mount points, so a target
        on a filesystem mounted below ``outer`` stays a target of its own.
        """
        if outer.options != inner.options:
            return False
        outer_path, inner_path = target_path(outer), target_path(inner)
        if not is_within(inner_path, outer_path):
            return False
        if boolean_option(outer, "cross_filesystems"):
            return True
        return not any(
            mount.mount_point != outer_path
            and is_within(mount.mount_point, outer_path)
            and is_within(inner_path, mount.mount_point)
            for mount in mountinfo.read_mounts()
        )

    # -- settings -----------------------------------------------------------

    @property
    def _protected(self) -> tuple[str, ...]:
        """Protected trees: the built-in list plus ``settings["protected_paths"]``."""
        configured = self.context.settings.get("protected_paths") or ()
        extra = tuple(os.path.abspath(path) for path in configured)
        return PROTECTED_TREES + extra + tuple(self.context.protected)

    def _method_params(self) -> dict[str, Any]:
        if self._params is None:
            self._params = self._read_method_params()
        return dict(self._params)

    def _read_method_params(self) -> dict[str, Any]:
        settings = self.context.settings
        passes = int(settings.get("passes", 1))
        if not 1 <= passes <= MAX_PASSES:
            raise InvalidTarget(f"passes must be from 1 to {MAX_PASSES}, got {passes}")
        readback = settings.get("readback", "full")
        fraction = 1.0 if readback == "full" else float(readback)
        if not 0.0 <= fraction <= 1.0:
            raise InvalidTarget(
                f'readback must be "full" or a fraction from 0 to 1, got {readback!r}'
            )
        return {
            "passes": passes,
            "final_zero": bool(settings.get("final_zero", False)),
            "readback": fraction,
        }

    def _scan_device_enabled(self) -> bool:
        return bool(self.context.settings.get("scan_device", os.geteuid() == 0))

    # -- describe -----------------------------------------------------------

    def _lstat_root(self) -> os.stat_result:
        try:
            return os.lstat(self.root)
        except FileNotFoundError:
            raise TargetNotFound(
                f"target {escape_path(self.root)} does not exist; check the path"
            ) from None
        except PermissionError:
            raise AccessDenied(
                f"cannot inspect target {escape_path(self.root)}: permission denied; "
                "run as a user who can read it"
            ) from None
        except OSError as error:
            self.log.debug("lstat failed", exc_info=True)
            raise TargetUnreachable(
                f"cannot inspect {escape_path(self.root)}: {error.strerror}"
            ) from None

    def _mount(self, path: str | None = None) -> mountinfo.Mount | None:
        if not self._mounts:
            self._mounts = mountinfo.read_mounts()
            self._mount_points = {mount.mount_point for mount in self._mounts}
            self._mount_by_directory.clear()
        path = path or self.root
        if path in self._mount_points:
            return mountinfo.mount_of(path, self._mounts)
        # A path that is no mount point itself lies on its directory's mount.
        directory = os.path.dirname(path)
        if directory not in self._mount_by_directory:
            self._mount_by_directory[directory] = mountinfo.mount_of(
                directory, self._mounts
            )
        return self._mount_by_directory[directory]

    def describe(self) -> TargetInfo:
        # A missing target is reported by discover: after a purge the target
        # is gone, and a later rescan still needs the filesystem's facts.
        try:
            self._root_status = os.lstat(self.root)
        except OSError:
            self._root_status = None
        mount = self._mount()
        if mount is None:
            raise TargetUnreachable(
                f"no mount found for {escape_path(self.root)} in /proc/self/mountinfo"
            )
        device = mountinfo.block_device(mount.major, mount.minor)
        media: dict[str, Any] = {
            "media_type": "filesystem",
            "path": escape_path(self.root),
            "filesystem": mount.fstype,
            "mount_point": escape_path(mount.mount_point),
            "source": escape_path(mount.source),
        }
        media.update(mountinfo.media_facts(device))
        notes = []
        if self._root_status is None:
            notes.append(
                f"{escape_path(self.root)} does not exist or cannot be inspected"
            )
        if self.keep_root or self.root == mount.mount_point:
            notes.append(
                f"{escape_path(self.root)} itself stays; what it holds is purged"
            )
        below = self._mount_points_below()
        if below and not self.cross_filesystems:
            listed = ", ".join(escape_path(point) for point in below[:3])
            more = f" and {len(below) - 3} more" if len(below) > 3 else ""
            notes.append(
                f"mounts below the target ({listed}{more}) are refused and left "
                "alone; the target option cross_filesystems: true includes them"
            )
        return TargetInfo(
            media=media,
            notes=tuple(notes),
            residual=tuple(self._residual(mount, media)),
        )

    def _mount_points_below(self) -> list[str]:
        """Return the mount points strictly below the target, sorted."""
        return sorted(
            {
                mount.mount_point
                for mount in self._mounts
                if mount.mount_point != self.root
                and is_within(mount.mount_point, self.root)
            }
        )

    def _residual(self, mount: mountinfo.Mount, media: dict[str, Any]) -> list[str]:
        residual = []
        copy_on_write = mountinfo.is_copy_on_write(mount.fstype)
        if copy_on_write:
            residual.append(
                f"{copy_on_write}; files on it are refused rather than overwritten"
            )
        journaled = mountinfo.ext4_has_journal(mount.major, mount.minor)
        if mount.fstype in ("ext3", "ext4") and journaled is not False:
            journal = (
                "Lethe zeroes the journal after the purge (EXT4_IOC_CHECKPOINT, Linux 5.13 and later)"
                if os.geteuid() == 0
                else "the journal is not zeroed because that needs root"
            )
            residual.append(
                "The ext4 journal holds copies of recently changed directory entries and "
                f"inodes (file names, sizes, times); {journal}. With data=journal mounts it "
                "holds file data too."
            )
        elif mount.fstype == "xfs":
            residual.append(
                "The xfs log holds copies of recently changed directory entries and inodes "
                "(file names, sizes, times) until it wraps; it cannot be cleared while mounted."
            )
        if mountinfo.non_rotational(media):
            residual.append(
                "The device is non-rotational (flash): wear levelling and over-provisioning "
                "keep old copies of overwritten blocks that no overwrite can reach; only a "
                "firmware sanitize or crypto-erase of the whole device removes them."
            )
        if "backing_file" in media:
            residual.append(
                f"The filesystem lives in the image file {media['backing_file']}; copies of "
                "that image (backups, snapshots of its filesystem) are outside the target."
            )
        residual.append(
            "Copies made before the purge (backups, snapshots of the underlying volume, "
            "editor and temporary files, swapped-out memory) are outside the target."
        )
        return residual

    # -- discover -----------------------------------------------------------

    def discover(self) -> Iterator[Item]:
        yield from self._discover_selection()
        # Runs after every selected file was planned, so the backup scan has
        # the fingerprints of all of them.
        yield from self.copies.discover()

    def _discover_selection(self) -> Iterator[Item]:
        root_status = self._root_status or self._lstat_root()
        self._root_status = root_status
        self._open.refresh()
        mode = root_status.st_mode
        protected = protected_reason(self.root, self._protected)
        if protected:
            yield make_item(
                self.root,
                _kind(mode),
                root_status,
                self._protected_refusal(self.root, protected),
            )
            return
        if stat.S_ISLNK(mode):
            yield symlink_item(self.root, root_status, removed=False)
            return
        if stat.S_ISREG(mode):
            yield self._root_file(root_status)
            return
        if not stat.S_ISDIR(mode):
            detail = f"{escape_path(self.root)} is a {_kind(mode).replace('-', ' ')}; it is never opened"
            yield make_item(
                self.root, _kind(mode), root_status, Refusal("special-file", detail)
            )
            return
        mount = self._mount()
        keep_root = self.keep_root or (
            mount is not None and mount.mount_point == self.root
        )
        walk = Walk(
            root=self.root,
            root_status=root_status,
            classify_file=self._classify_file,
            classify_directory=self._classify_directory,
            include_root=not keep_root,
            mount_point=mount.mount_point if mount else "/",
        )
        # The same dict the walk fills, so _plan_directory reads each
        # directory's links while the walk streams.
        self._symlinks = walk.symlinks
        try:
            yield from walk.items()
        except PermissionError:
            raise AccessDenied(
                f"cannot list {escape_path(self.root)}: permission denied; run as a user who can read it"
            ) from None
        except OSError as error:
            self.log.debug("walk failed", exc_info=True)
            raise TargetUnreachable(
                f"cannot list {escape_path(self.root)}: {error.strerror}"
            ) from None
        finally:
            self._symlinks = walk.symlinks

    def _root_file(self, status: os.stat_result) -> Item:
        refusal = self._classify_file(self.root, status)
        if refusal is None and status.st_nlink > 1:
            detail = (
                f"{escape_path(self.root)} has {status.st_nlink} hard links and the others "
                "are outside the target"
            )
            refusal = Refusal("hard-link", detail)
        return make_item(self.root, "file", status, refusal)

    def _classify_directory(self, path: str, status: os.stat_result) -> Refusal | None:
        protected = protected_reason(path, self._protected)
        if protected:
            return self._protected_refusal(path, protected)
        if self.cross_filesystems:
            return None
        mounted = [mount for mount in self._mounts if mount.mount_point == path]
        other_device = (
            self._root_status is not None and status.st_dev != self._root_status.st_dev
        )
        if not (mounted or other_device):
            return None
        return Refusal("mount-point", _mount_point_detail(path, mounted, other_device))

    def _classify_file(self, path: str, status: os.stat_result) -> Refusal | None:
        protected = self._protected_file_reason(path)
        if protected:
            return self._protected_refusal(path, protected)
        if self._root_status is not None and status.st_dev != self._root_status.st_dev:
            if not self.cross_filesystems:
                return Refusal(
                    "mount-point",
                    f"{escape_path(path)} is on another filesystem than the target",
                )
        mount = self._mount(path)
        if mount is not None:
            reason = mountinfo.is_copy_on_write(mount.fstype)
            if reason:
                return Refusal("copy-on-write", f"{escape_path(path)}: {reason}")
            if mount.read_only:
                return Refusal(
                    "permission", f"{escape_path(path)} is on a read-only mount"
                )
        holders = self._open.holders(status.st_dev, status.st_ino)
        if holders:
            return Refusal(
                "open-file", f"{escape_path(path)} is open in {', '.join(holders[:3])}"
            )
        if stat.S_ISREG(status.st_mode):
            return self._inspect_file(path, status, mount)
        return None

    def _protected_refusal(self, path: str, reason: str) -> Refusal:
        """Return the refusal of a protected path, naming Lethe's own state directory."""
        state = state_directory_reason(path, tuple(self.context.protected))
        if state:
            return Refusal("state-directory", state)
        return Refusal("protected-path", reason)

    def _protected_file_reason(self, path: str) -> str | None:
        """Return protected_reason for a file, checking each directory once.

        A file is protected when its own path is a protected path, or when
        its directory lies in a protected tree. The result for each directory
        is cached.
        """
        if self._protected_trees is None:
            self._protected_trees = self._protected
            self._protected_names = frozenset(self._protected_trees) | frozenset(
                PROTECTED_EXACT
            )
        trees = self._protected_trees
        directory = os.path.dirname(path)
        inside = self._protected_directories.get(directory)
        if inside is None:
            inside = any(is_within(directory, tree) for tree in trees)
            self._protected_directories[directory] = inside
        if inside or path in self._protected_names:
            return protected_reason(path, trees)
        return None

    def _inspect_file(
        self, path: str, status: os.stat_result, mount: mountinfo.Mount | None
    ) -> Refusal | None:
        """Check a regular file's attributes and extents, and read its fingerprints.

        One open serves all three; plan_item takes the fingerprints when the
        file is permitted, so it need not open the file again.
        """
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
        except OSError:
            # An unreadable file gets its refusal here. plan_item and purge
            # report any other reason the open failed.
            return self._access_refusal(path)
        try:
            locked = _locked_attribute(descriptor)
            if locked is not None:
                name, letter = locked
                return Refusal(
                    "permission",
                    f"{escape_path(path)} is {name} (chattr +{letter}), so it can be "
                    f"neither overwritten nor removed; run chattr -{letter} on it and "
                    "plan again",
                )
            refusal = self._access_refusal(path)
            if refusal is not None:
                return refusal
            if mount is not None and mount.fstype in ("xfs", "ocfs2"):
                refusal = self._shared_extent_refusal(descriptor, path)
                if refusal is not None:
                    return refusal
            self._remember_fingerprints(descriptor, path, status)
        finally:
            os.close(descriptor)
        return None

    def _access_refusal(self, path: str) -> Refusal | None:
        """Refuse a file that this user cannot read and overwrite, or then remove.

        Checked at planning time, so that the purge does not fail halfway
        through a tree on the first file it may not touch.
        """
        if not os.access(path, os.R_OK | os.W_OK):
            return Refusal(
                "permission",
                f"{escape_path(path)} is not readable and writable by this user "
                f"(uid {os.geteuid()}); run lethe as its owner or as root",
            )
        parent = os.path.dirname(path)
        writable = self._writable_directories.get(parent)
        if writable is None:
            writable = os.access(parent, os.W_OK | os.X_OK)
            self._writable_directories[parent] = writable
        if writable:
            return None
        locked = _locked_directory_attribute(parent)
        if locked is not None:
            name, letter = locked
            reason = f"is {name} (chattr +{letter})"
            fix = f"run chattr -{letter} on the directory"
        else:
            reason = f"is not writable by this user (uid {os.geteuid()})"
            fix = "run lethe as the directory's owner or as root"
        return Refusal(
            "permission",
            f"the directory of {escape_path(path)} {reason}, so the file cannot be "
            f"removed after an overwrite; {fix} and plan again",
        )

    def _shared_extent_refusal(self, descriptor: int, path: str) -> Refusal | None:
        try:
            shared = shared_extents(descriptor)
        except OSError:
            self.log.debug("FIEMAP failed", path=escape_path(path), exc_info=True)
            shared = None
        if shared:
            return Refusal(
                "copy-on-write",
                f"{escape_path(path)} shares {shared} extent(s) with another file (reflink copy "
                "or deduplication); an overwrite would go to new blocks and the shared copy "
                "would keep the data",
            )
        return None

    def _remember_fingerprints(
        self, descriptor: int, path: str, status: os.stat_result
    ) -> None:
        """Keep the fingerprints of an unchanged file for plan_item."""
        try:
            found = os.fstat(descriptor)
            if not stat.S_ISREG(found.st_mode) or identity(found) != identity(status):
                return  # plan_item reads the file again and reports the change
            fingerprints = _read_fingerprints(descriptor, found)
        except OSError:
            return
        if len(self._early_fingerprints) >= _EARLY_FINGERPRINTS_LIMIT:
            # Items that never reached plan_item (held by a policy, say).
            del self._early_fingerprints[next(iter(self._early_fingerprints))]
        self._early_fingerprints[path] = (identity(found), fingerprints)

    # -- plan ---------------------------------------------------------------

    def plan_item(self, item: Item) -> Decision:
        if item.kind.startswith("snapshot"):
            return self.copies.plan_snapshot(item)
        refusal = item.attributes.get("refusal")
        if (
            refusal
            and refusal["reason"] == "copy-on-write"
            and item.kind == "file"
            and self.copies.may_unlink()
        ):
            decision = self._plan_file(item)
            if decision.method is not None:
                planned = self.copies.copy_on_write_decision(
                    item, refusal, decision.fingerprints
                )
                if planned is not None:
                    return planned
        if refusal:
            return Decision(refusal=Refusal(refusal["reason"], refusal["detail"]))
        if item.kind == "file" and is_mask_copy(item.key):
            return Decision(refusal=mask_copy_refusal(item.key))
        if item.attributes.get("copy") == "backup":
            kept = self.copies.backup_refusal(item)
            if kept is not None:
                return Decision(refusal=kept)
        return self._plan_file(item)

    def _plan_file(self, item: Item) -> Decision:
        if item.kind == "directory":
            return self._plan_directory(item)
        if item.kind != "file":
            return Decision(
                refusal=Refusal(
                    "not-supported", f"{item.key}: {item.kind} is not purged"
                )
            )
        paths = _link_paths(item)
        early = self._early_fingerprints.pop(paths[0], None)
        # Fingerprints read at classification came through a descriptor whose
        # fstat matched the plan's identity, so the lstat check is done.
        if early is None or len(paths) > 1 or early[0] != dict(item.identity):
            early = None
            for path in paths:
                status = _lstat_or_changed(path, item.key)
                if identity(status) != dict(item.identity):
                    raise ItemChanged(f"{item.key} changed after discovery; plan again")
        self._open.refresh(max_age=30.0)
        holders = self._open.holders(item.identity["dev"], item.identity["ino"])
        if holders:
            return Decision(
                refusal=Refusal(
                    "open-file", f"{item.key} is open in {', '.join(holders[:3])}"
                )
            )
        if early is not None:
            fingerprints = early[1]
        else:
            fingerprints = self._file_fingerprints(paths[0], item)
        names = token_fingerprints(*(os.fsencode(os.path.basename(p)) for p in paths))
        if self.copies.backups.paths:
            self.copies.remember(item, fingerprints, field_values(paths[0]))
        return Decision(
            method=Method.CLEAR_OVERWRITE,
            fingerprints=tuple(
                fingerprints + [n for n in names if n not in fingerprints]
            ),
            params=self._method_params(),
        )

    def plan_mask(self, item: Item, mask: Mapping[str, Any]) -> Decision:
        from plugins._files.mask import plan_mask

        return plan_mask(self, item, mask)

    def _plan_directory(self, item: Item) -> Decision:
        path = unescape_path(item.key)
        status = _lstat_or_changed(path, item.key)
        if (status.st_dev, status.st_ino) != (
            item.identity["dev"],
            item.identity["ino"],
        ):
            raise ItemChanged(f"{item.key} was replaced after discovery; plan again")
        kept = int(item.attributes.get("kept", 0))
        if kept:
            return Decision(
                refusal=Refusal(
                    "not-empty",
                    f"{item.key} keeps {kept} refused entr{'y' if kept == 1 else 'ies'} below it, "
                    "so the directory stays",
                )
            )
        params: dict[str, Any] = {"remove": "directory"}
        links = self._symlinks.get(path)
        if links:
            # Kept in the journal, so a resumed job removes them as well.
            params["symlinks"] = [[escape_path(name), inode] for name, inode in links]
        return Decision(
            method=Method.CLEAR_OVERWRITE,
            fingerprints=tuple(token_fingerprints(os.fsencode(os.path.basename(path)))),
            params=params,
        )

    def _file_fingerprints(self, path: str, item: Item) -> list[bytes]:
        """Read the file's allocated data once and pick content windows from it."""
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
        except OSError as error:
            raise ItemChanged(
                f"cannot open {item.key} to fingerprint it: {error.strerror}"
            ) from None
        try:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode) or identity(status) != dict(
                item.identity
            ):
                raise ItemChanged(f"{item.key} changed after discovery; plan again")
            return _read_fingerprints(descriptor, status)
        except OSError as error:
            self.log.debug("fingerprint read failed", item=item.key, exc_info=True)
            raise ItemChanged(
                f"cannot read {item.key} to fingerprint it: {error.strerror}"
            ) from None
        finally:
            os.close(descriptor)

    # -- purge --------------------------------------------------------------

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        from plugins._files.purge import BatchPurge

        self._open.refresh(max_age=2.0)
        copies = [p for p in batch if self._is_copy_step(p)]
        for planned in copies:
            yield self.copies.purge(planned)
        if copies:
            batch = [p for p in batch if not self._is_copy_step(p)]
        runner = BatchPurge(self, batch)
        try:
            by_key = {planned.item.key: planned for planned in batch}
            for result in runner.run():
                if result.status == "purged":
                    planned = by_key[result.key]
                    self._purged_fingerprints[result.key] = (
                        planned.decision.fingerprints
                    )
                    self._purged_devices[result.key] = planned.item.identity["dev"]
                    self._purged_files[result.key] = (
                        planned.item.identity["ino"],
                        _link_paths(planned.item),
                    )
                    self._scan = None
                yield result
        finally:
            runner.close()

    def _is_copy_step(self, planned: PlannedItem) -> bool:
        """Tell whether an item is a snapshot or a file removed by unlink only."""
        return planned.decision.permitted and (
            planned.item.kind.startswith("snapshot")
            or planned.decision.method == Method.WIPE_FREE_SPACE
        )

    def complete(self) -> Iterator[PurgeResult]:
        from plugins._files.purge import remove_recorded_symlinks

        if self.context.dry_run:
            return
        yield from self.copies.complete()

        removed = remove_recorded_symlinks(self)
        if removed:
            yield PurgeResult(
                "remove-symlinks",
                "purged",
                f"removed {removed} symbolic link(s); their destinations were not touched",
                method=Method.CLEAR_OVERWRITE,
            )
        if self.wipe_free_space or self.copies.needs_wipe:
            yield self._wipe_free_space()
        if os.geteuid() != 0:
            return  # the checkpoint ioctl needs CAP_SYS_ADMIN
        from plugins._files.purge import mount_of_device

        journaled = {}
        for device in set(self._purged_devices.values()):
            mount = mount_of_device(self, device)
            if mount is not None and mount.fstype in ("ext3", "ext4"):
                journaled[mount.mount_point] = mount
        for mount in journaled.values():
            yield self._zero_journal(mount)

    def _wipe_free_space(self) -> PurgeResult:
        try:
            from plugins.freespace import wipe_free_space
        except ImportError:
            return PurgeResult(
                "wipe-free-space",
                "failed",
                "free-space wipe is not available: the plugins.freespace module is not installed",
                method=Method.WIPE_FREE_SPACE,
            )
        try:
            return wipe_free_space(
                self.root if os.path.isdir(self.root) else os.path.dirname(self.root),
                self.context,
            )
        except PluginError as error:
            return PurgeResult(
                "wipe-free-space", "failed", str(error), method=Method.WIPE_FREE_SPACE
            )

    def _zero_journal(self, mount: mountinfo.Mount) -> PurgeResult:
        try:
            mountinfo.zero_ext4_journal(mount.mount_point)
        except OSError as error:
            if error.errno == errno.ENODEV:
                # The ext4 checkpoint ioctl returns ENODEV when the filesystem
                # was made without a journal, so no journal contains old names.
                return PurgeResult(
                    "zero-journal",
                    "purged",
                    f"{escape_path(mount.mount_point)} has no ext4 journal to zero",
                )
            self.log.debug("journal checkpoint failed", exc_info=True)
            detail = (
                f"could not zero the ext4 journal of {escape_path(mount.mount_point)}: "
                f"{error.strerror}; it may still hold names of purged files until it wraps"
            )
            self.log.error(
                "journal zeroing failed",
                mount_point=escape_path(mount.mount_point),
                error=error.strerror,
            )
            return PurgeResult("zero-journal", "failed", detail)
        self.log.info("journal zeroed", mount_point=escape_path(mount.mount_point))
        return PurgeResult(
            "zero-journal",
            "purged",
            f"checkpointed and zeroed the ext4 journal of {escape_path(mount.mount_point)}",
        )

    # -- verify -------------------------------------------------------------

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        for planned in batch:
            if planned.item.kind.startswith("snapshot"):
                continue  # verified by listing, not by the raw scan
            if planned.item.key not in self._purged_fingerprints:
                # Purged in an earlier process (a resumed job).
                self._purged_fingerprints[planned.item.key] = (
                    planned.decision.fingerprints
                )
                self._purged_devices[planned.item.key] = planned.item.identity["dev"]
                self._purged_files[planned.item.key] = (
                    planned.item.identity["ino"],
                    _link_paths(planned.item),
                )
                self._scan = None
        if self._scan_device_enabled() and self._scan is None:
            self._scan = self._scan_device()
        # Each directory is listed once per batch rather than once per file.
        self._leftover_listings.clear()
        for planned in batch:
            if planned.item.kind.startswith("snapshot"):
                check = self.copies.verify_snapshot(planned)
                yield Evidence(planned.item.key, (check,))
                continue
            yield Evidence(planned.item.key, tuple(self._checks(planned)))

    def _checks(self, planned: PlannedItem) -> Iterator[Check]:
        item = planned.item
        if planned.decision.method == Method.MASK:
            from plugins._files.mask import masked_file_check

            yield masked_file_check(planned)
            yield self._readback_check(planned)
            yield self._scan_check(planned)
            return
        for path in _link_paths(item):
            yield _path_gone_check(path, escape_path(path))
            if item.kind == "file" and "ino" in item.identity:
                yield _leftover_check(path, item.identity, self._candidates(path))
        if item.kind == "file" and planned.decision.method != Method.WIPE_FREE_SPACE:
            yield self._readback_check(planned)
        yield self._scan_check(planned)

    def _candidates(self, path: str) -> dict[tuple[int, int], list[tuple[str, int]]]:
        directory = os.path.dirname(path)
        listing = self._leftover_listings.get(directory)
        if listing is None:
            listing = leftover_candidates(directory)
            self._leftover_listings[directory] = listing
        return listing

    def _readback_check(self, planned: PlannedItem) -> Check:
        record = self._readback.get(planned.item.key)
        if record is not None:
            return Check("read-back", record[0], record[1])
        params = planned.decision.params
        if params.get("resumed") or params.get("recheck"):
            # The read-back ran with the overwrite, in an earlier process.
            return Check(
                "read-back", True, "not run: the overwrite ran in an earlier process"
            )
        return Check("read-back", False, "no read-back was recorded for this item")

    def _scan_check(self, planned: PlannedItem) -> Check:
        if not self._scan_device_enabled():
            return Check("device-scan", True, "off: scan_device is false")
        if not planned.decision.fingerprints:
            return Check(
                "device-scan",
                True,
                "not run: no fingerprints for this item (name too short, no distinctive content, or a resumed job)",
            )
        outcome = (self._scan or {}).get(planned.item.key)
        if outcome is None or not outcome.ran:
            detail = outcome.detail if outcome else "not run"
            if "scan_device" not in self.context.settings:
                # Unset means "scan when the device is readable": a device
                # that even root cannot open (a hypervisor's disk) or a
                # filesystem without one (tmpfs) skips the scan, and the
                # evidence records that. Only an explicit true makes it required.
                return Check(
                    "device-scan",
                    True,
                    f"{detail}; skipped because scan_device is unset "
                    "(set scan_device: true to require the scan)",
                )
            return Check("device-scan", False, detail)
        count = len(planned.decision.fingerprints)
        if outcome.hits:
            return Check(
                "device-scan",
                False,
                f"{len(outcome.hits)} fingerprint hit(s) on {outcome.detail}: "
                + "; ".join(outcome.hits[:5]),
            )
        detail = f"none of {count} fingerprint(s) found on {outcome.detail}"
        if outcome.explained:
            detail = (
                f"none of {count} fingerprint(s) found on {outcome.detail} outside "
                f"live files; {len(outcome.explained)} hit(s) lie in live files "
                "this job did not purge: " + "; ".join(outcome.explained[:5])
            )
        if outcome.residual:
            detail += (
                f"; the file name remains {len(outcome.residual)} time(s) inside "
                "the xfs log (residual: it is overwritten as the log wraps)"
            )
        return Check("device-scan", True, detail)

    def _scan_device(self) -> dict[str, Any]:
        from plugins._files.purge import scan_device

        return scan_device(self)

    def close(self) -> None:
        self._purged_fingerprints.clear()
        self._purged_devices.clear()
        self._purged_files.clear()


def _mount_point_detail(
    path: str, mounted: list[mountinfo.Mount], other_device: bool
) -> str:
    """Say what is mounted at a directory below the target and how to include it."""
    shown = escape_path(path)
    include = "set the target option cross_filesystems: true to purge through it"
    if not mounted:
        return (
            f"{shown} is on another filesystem than the target; it is left alone "
            f"unless you {include}"
        )
    # The last line of mountinfo is the mount that is visible at the path.
    mount = mounted[-1]
    source = escape_path(mount.source)
    if not other_device:
        return (
            f"{shown} is a bind mount of {escape_path(mount.root)} of the target's own "
            f"{mount.fstype} filesystem ({source}), so its files are also reachable "
            "elsewhere; it is left alone. Unmount it (umount) and plan again, or "
            f"{include}"
        )
    if mount.root != "/":
        return (
            f"{shown} is a bind mount of {escape_path(mount.root)} from the "
            f"{mount.fstype} filesystem on {source}; it is left alone unless you "
            f"{include}"
        )
    return (
        f"{shown} is the mount point of another filesystem ({mount.fstype} on "
        f"{source}); it is left alone unless you {include}"
    )


def _kind(mode: int) -> str:
    from plugins._files.walk import special_kind

    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return special_kind(mode)


def _link_paths(item: Item) -> list[str]:
    links = item.attributes.get("links")
    if links:
        return [unescape_path(link) for link in links]
    return [unescape_path(item.key)]


def _lstat_or_changed(path: str, key: str) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        raise ItemChanged(f"{key} vanished after discovery; plan again") from None
    except OSError as error:
        raise ItemChanged(f"cannot inspect {key}: {error.strerror}") from None


def _path_gone_check(path: str, key: str) -> Check:
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return Check("path-gone", True, f"{key} does not exist")
    except OSError as error:
        return Check("path-gone", False, f"cannot check {key}: {error.strerror}")
    return Check("path-gone", False, f"{key} still exists (inode {status.st_ino})")


#: FS_IOC_GETFLAGS from linux/fs.h, and the inode flags that forbid a purge.
_FS_IOC_GETFLAGS = 0x80086601
_LOCKING_FLAGS = ((0x00000010, "immutable", "i"), (0x00000020, "append-only", "a"))


def _locked_attribute(descriptor: int) -> tuple[str, str] | None:
    """Return the name and chattr letter of a flag that forbids overwriting, if set."""
    try:
        raw = fcntl.ioctl(descriptor, _FS_IOC_GETFLAGS, bytes(8))
    except OSError:
        return None  # the filesystem keeps no such flags
    flags = int.from_bytes(raw[:4], sys.byteorder)
    for flag, name, letter in _LOCKING_FLAGS:
        if flags & flag:
            return name, letter
    return None


def _locked_directory_attribute(path: str) -> tuple[str, str] | None:
    """Return the name and chattr letter of a flag that forbids removing entries."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_DIRECTORY | _OPEN_FLAGS)
    except OSError:
        return None
    try:
        return _locked_attribute(descriptor)
    finally:
        os.close(descriptor)


def _read_fingerprints(descriptor: int, status: os.stat_result) -> list[bytes]:
    """Read a file's allocated data, or samples of it, and pick content windows."""
    size = status.st_size
    if size <= WHOLE_READ_LIMIT and status.st_blocks * 512 >= size:
        # Allocated blocks cover the size, so the file has holes only if it
        # also has blocks past its end (fallocate --keep-size). One read
        # replaces the SEEK_DATA walk, and a hole reads as zeros, which
        # content_fingerprints never picks.
        return content_fingerprints(os.pread(descriptor, size, 0))
    regions = list(data_regions(descriptor, size))
    total = sum(end - start for start, end in regions)
    if total <= WHOLE_READ_LIMIT:
        data = b"".join(
            os.pread(descriptor, end - start, start) for start, end in regions
        )
        return content_fingerprints(data)
    picked: list[bytes] = []
    for offset in _spread_offsets(regions, total, WINDOWS_PER_ITEM):
        for window in content_fingerprints(os.pread(descriptor, _SAMPLE, offset), 1):
            if window not in picked:
                picked.append(window)
    return picked


def find_renamed_leftover(
    path: str,
    identity: dict,
    candidates: dict[tuple[int, int], list[tuple[str, int]]] | None = None,
) -> str | None:
    """Return the random name an interrupted purge gave the file at ``path``, if any.

    A crash between the rename and the unlink leaves the overwritten file
    under a random name of the same byte length in the same directory. It is
    recognised by its device and inode number, which stay the same across a
    rename, by a name ``random_name`` could have produced, and by its size:
    the planned size, or 0 after the truncation. The size rules out a new file
    that reused the inode number of an unlinked one. ``candidates`` is the
    directory's :func:`leftover_candidates`, when the caller lists it once
    for many files.
    """
    parent, name = os.path.split(path)
    if candidates is None:
        candidates = leftover_candidates(parent)
    length = len(os.fsencode(name))
    key = (identity.get("dev"), identity.get("ino"))
    for found, size in candidates.get(key, ()):
        if (
            len(os.fsencode(os.path.basename(found))) == length
            and size in (identity.get("size"), 0)
        ):
            return found
    return None


def leftover_candidates(directory: str) -> dict[tuple[int, int], list[tuple[str, int]]]:
    """List the regular files of ``directory`` that ``random_name`` could have named.

    Returns their paths and sizes by device and inode number. Returns an
    empty mapping when the directory cannot be listed, because a removed
    directory contains no file.
    """
    found: dict[tuple[int, int], list[tuple[str, int]]] = {}
    try:
        entries = os.scandir(directory)
    except OSError:
        return found
    with entries:
        for entry in entries:
            if not set(entry.name) <= _NAME_SET:
                continue
            try:
                status = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                key = (status.st_dev, status.st_ino)
                found.setdefault(key, []).append((entry.path, status.st_size))
    return found


def _leftover_check(
    path: str,
    identity: dict,
    candidates: dict[tuple[int, int], list[tuple[str, int]]] | None = None,
) -> Check:
    leftover = find_renamed_leftover(path, identity, candidates)
    if leftover is None:
        return Check("no-leftover", True, "no renamed copy of the file remains")
    return Check(
        "no-leftover",
        False,
        f"{escape_path(leftover)} is the file renamed by an interrupted purge and still exists",
    )


def _spread_offsets(
    regions: list[tuple[int, int]], total: int, count: int
) -> Iterator[int]:
    """Yield ``count`` offsets spread evenly over the data regions."""
    step = max(total // count, 1)
    wanted = [index * step for index in range(count)]
    passed = 0
    for start, end in regions:
        length = end - start
        while wanted and wanted[0] < passed + length:
            offset = start + wanted.pop(0) - passed
            yield min(offset, max(end - _SAMPLE, start))
        passed += length


def random_name(length: int) -> str:
    """Return a random file name of ``length`` ASCII characters, never "." or ".."."""
    while True:
        raw = random_bytes(length * 2).translate(_NAME_TABLE, _NAME_REJECTED)
        if len(raw) < length:
            continue
        name = raw[:length].decode("ascii")
        if name not in (".", ".."):
            return name
