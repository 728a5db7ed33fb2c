"""Discovery of a path target: a streaming, post-order walk that classifies entries.

Files are yielded as they are found and every directory after its contents,
so the purge removes a directory after the files in it. Two kinds of entry
are held back, and only those: a file with several hard links waits until
every link is found (or the walk ends), and a directory that holds such a
waiting file waits with it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from plugins._files.paths import escape_path, is_within
from plugins.base import Item, Refusal

#: Entries a search for hard links outside the target looks at before it gives up.
LINK_SEARCH_LIMIT = 200_000

Classifier = Callable[[str, os.stat_result], Refusal | None]


def identity(status: os.stat_result) -> dict[str, int]:
    """Return the facts that change when a file is replaced or modified."""
    return {
        "dev": status.st_dev,
        "ino": status.st_ino,
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "nlink": status.st_nlink,
    }


def directory_identity(status: os.stat_result) -> dict[str, int]:
    # A directory's size and mtime change as its contents are purged.
    return {"dev": status.st_dev, "ino": status.st_ino}


def special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "char-device"
    if stat.S_ISBLK(mode):
        return "block-device"
    return "unknown"


def make_item(
    path: str,
    kind: str,
    status: os.stat_result,
    refusal: Refusal | None = None,
    **attributes: object,
) -> Item:
    """Build the Item for one entry; ``refusal`` travels in the attributes."""
    key = escape_path(path)
    facts: dict[str, object] = {"path": key, **attributes}
    if refusal is not None:
        facts["refusal"] = {"reason": refusal.reason, "detail": refusal.detail}
    if kind == "directory":
        ident = directory_identity(status)
    else:
        ident = identity(status)
    size = status.st_size if kind == "file" else 0
    return Item(
        key=key, kind=kind, size=size, identity=ident, attributes=facts, label=key
    )


@dataclass
class _Frame:
    path: str
    status: os.stat_result
    entries: Iterator[os.DirEntry[str]]
    kept: int = 0


@dataclass
class _Pending:
    """A file with several hard links, waiting for the rest of its links."""

    status: os.stat_result
    paths: list[str] = field(default_factory=list)


@dataclass
class Walk:
    """One discovery run over a directory target.

    ``classify_file`` and ``classify_directory`` return the refusal of an
    entry or None. ``symlinks`` collects, per parent directory path, the
    ``(name, inode)`` of every symbolic link found, so the purge can remove
    the links without following them.
    """

    root: str
    root_status: os.stat_result
    classify_file: Classifier
    classify_directory: Classifier
    include_root: bool
    mount_point: str
    symlinks: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def items(self) -> Iterator[Item]:
        pending: dict[tuple[int, int], _Pending] = {}
        deferred: list[tuple[str, os.stat_result, int]] = []
        stack = [_Frame(self.root, self.root_status, os.scandir(self.root))]
        try:
            while stack:
                frame = stack[-1]
                entry = next(frame.entries, None)
                if entry is not None:
                    yield from self._entry(entry, frame, stack, pending, deferred)
                    continue
                stack.pop()
                frame.entries.close()  # type: ignore[attr-defined]
                if stack:
                    stack[-1].kept += frame.kept
                if frame.path == self.root and not self.include_root:
                    continue
                waiting = any(
                    is_within(path, frame.path)
                    for held in pending.values()
                    for path in held.paths
                ) or any(is_within(entry[0], frame.path) for entry in deferred)
                if waiting:
                    deferred.append((frame.path, frame.status, frame.kept))
                else:
                    yield self._directory(frame.path, frame.status, frame.kept)
        finally:
            for frame in stack:
                frame.entries.close()  # type: ignore[attr-defined]
        yield from self._unresolved_links(pending, deferred)

    def _directory(self, path: str, status: os.stat_result, kept: int) -> Item:
        return make_item(path, "directory", status, kept=kept)

    def _entry(self, entry, frame, stack, pending, deferred) -> Iterator[Item]:
        path = entry.path
        try:
            status = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return  # removed while we looked
        except OSError as error:
            frame.kept += 1
            refusal = Refusal(
                "permission", f"cannot read {escape_path(path)}: {error.strerror}"
            )
            yield Item(
                escape_path(path),
                "unknown",
                attributes={
                    "path": escape_path(path),
                    "refusal": {"reason": refusal.reason, "detail": refusal.detail},
                },
                label=escape_path(path),
            )
            return
        mode = status.st_mode
        if stat.S_ISLNK(mode):
            self.symlinks.setdefault(frame.path, []).append((entry.name, status.st_ino))
            yield symlink_item(path, status, removed=True)
        elif stat.S_ISDIR(mode):
            refusal = self.classify_directory(path, status)
            if refusal is not None:
                frame.kept += 1
                yield make_item(path, "directory", status, refusal)
                return
            try:
                entries = os.scandir(path)
            except OSError as error:
                frame.kept += 1
                detail = f"cannot list {escape_path(path)}: {error.strerror}"
                yield make_item(
                    path, "directory", status, Refusal("permission", detail)
                )
                return
            stack.append(_Frame(path, status, entries))
        elif stat.S_ISREG(mode):
            if status.st_nlink > 1:
                yield from self._hard_link(path, status, stack, pending, deferred)
                return
            refusal = self.classify_file(path, status)
            if refusal is not None:
                frame.kept += 1
            yield make_item(path, "file", status, refusal)
        else:
            frame.kept += 1
            kind = special_kind(mode)
            detail = (
                f"{escape_path(path)} is a {kind.replace('-', ' ')}; it is never opened"
            )
            yield make_item(path, kind, status, Refusal("special-file", detail))

    def _hard_link(self, path, status, stack, pending, deferred) -> Iterator[Item]:
        waiting = pending.setdefault((status.st_dev, status.st_ino), _Pending(status))
        waiting.paths.append(path)
        if len(waiting.paths) < status.st_nlink:
            return
        del pending[(status.st_dev, status.st_ino)]
        refusal = self.classify_file(waiting.paths[0], status)
        if refusal is not None:
            self._keep(waiting.paths, stack, deferred)
        links = [escape_path(p) for p in waiting.paths]
        yield make_item(waiting.paths[0], "file", status, refusal, links=links)

    def _keep(self, paths, stack, deferred) -> None:
        """Count a refused file in every directory above it that is not yet yielded."""
        for frame in stack:
            frame.kept += sum(1 for p in paths if is_within(p, frame.path))
        for index, (directory, status, kept) in enumerate(deferred):
            extra = sum(1 for p in paths if is_within(p, directory))
            deferred[index] = (directory, status, kept + extra)

    def _unresolved_links(self, pending, deferred) -> Iterator[Item]:
        outside = find_links(self.mount_point, self.root, pending) if pending else {}
        for (device, inode), waiting in pending.items():
            self._keep(waiting.paths, [], deferred)
            found = outside.get((device, inode), [])
            count = waiting.status.st_nlink - len(waiting.paths)
            inside = escape_path(waiting.paths[0])
            if found:
                others = ", ".join(escape_path(p) for p in found)
                detail = f"{inside} has {waiting.status.st_nlink} hard links; {others} is outside the target"
            else:
                detail = (
                    f"{inside} has {count} hard link(s) outside the target that a search of "
                    f"{escape_path(self.mount_point)} did not locate"
                )
            links = [escape_path(p) for p in waiting.paths]
            refusal = Refusal("hard-link", detail)
            yield make_item(
                waiting.paths[0],
                "file",
                waiting.status,
                refusal,
                links=links,
                outside=[escape_path(p) for p in found],
            )
        for directory, status, kept in deferred:
            yield self._directory(directory, status, kept)


def symlink_item(path: str, status: os.stat_result, removed: bool) -> Item:
    """Build the refused item of a symbolic link, naming where it points."""
    try:
        destination = escape_path(os.readlink(path))
    except OSError:
        destination = "an unreadable destination"
    if removed:
        detail = f"symbolic link to {destination}; the link is removed, {destination} is never touched"
    else:
        detail = f"the target is a symbolic link to {destination}; name the real path to purge it"
    return make_item(
        path, "symlink", status, Refusal("symlink", detail), points_to=destination
    )


def find_links(
    mount_point: str, root: str, wanted: dict[tuple[int, int], _Pending]
) -> dict[tuple[int, int], list[str]]:
    """Search one filesystem, outside ``root``, for other links of ``wanted`` inodes."""
    device = next(iter(wanted))[0]
    found: dict[tuple[int, int], list[str]] = {}
    missing = sum(p.status.st_nlink - len(p.paths) for p in wanted.values())
    stack = [mount_point]
    seen = 0
    while stack and missing > 0 and seen < LINK_SEARCH_LIMIT:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if is_within(entry.path, root):
                continue
            try:
                status = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if status.st_dev != device:
                continue
            if stat.S_ISDIR(status.st_mode):
                stack.append(entry.path)
            elif (status.st_dev, status.st_ino) in wanted:
                found.setdefault((status.st_dev, status.st_ino), []).append(entry.path)
                missing -= 1
    return found
