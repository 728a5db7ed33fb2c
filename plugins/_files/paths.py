"""Item keys for file paths, target path parsing and protected system paths."""

from __future__ import annotations

import os
import urllib.parse

from plugins.base import Target, escape_path
from plugins.base import unescape_path as unescape_path  # re-exported
from plugins.errors import InvalidTarget

#: Paths that are refused together with everything below them.
PROTECTED_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/snap",
    "/sys",
    "/usr",
    "/var/lib",
)
#: Paths refused as a whole, while files below them may be selected.
PROTECTED_EXACT = (
    "/",
    "/home",
    "/media",
    "/mnt",
    "/opt",
    "/root",
    "/srv",
    "/tmp",
    "/var",
)


def target_path(target: Target) -> str:
    """Return the absolute path a ``path`` target names, with parents resolved.

    Symbolic links in the parent directories are resolved, but the last
    component is kept as it is, so a target that is itself a symbolic link is
    seen as a link and never followed.
    """
    url = target.url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidTarget(
                f"file URL {escape_path(url)!r} names host {parts.netloc!r}; "
                "only local paths are supported (file:///path)"
            )
        path = urllib.parse.unquote(parts.path, errors="surrogateescape")
    elif parts.scheme == "":
        path = url
    else:
        raise InvalidTarget(f"target {escape_path(url)!r} is not a local path")
    if not path:
        raise InvalidTarget("target path is empty; give an absolute path")
    # Resolve as the kernel does: a ".." after a symbolic link leads out of
    # the link's target, so it must not be collapsed as text first.
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    path = path.rstrip("/") or "/"
    parent, name = os.path.split(path)
    if name in (".", ".."):
        return os.path.realpath(path)
    if path == "/":
        return path
    # The last name stays unresolved, so a target that is itself a symbolic
    # link is seen, and refused, as a link.
    return os.path.join(os.path.realpath(parent), name)


def path_url(path: str) -> str:
    """Return a target URL for ``path`` that journals and certificates can store.

    A printable path stays a bare path. A path with control characters or
    bytes that are not valid UTF-8 becomes a percent-encoded ``file://`` URL,
    which :func:`target_path` decodes back to the same bytes.
    """
    if path.isprintable():
        return path
    return "file://" + urllib.parse.quote(path, safe="/", errors="surrogateescape")


def is_within(path: str, root: str) -> bool:
    """Tell whether ``path`` is ``root`` or lies below it."""
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def protected_reason(path: str, trees: tuple[str, ...]) -> str | None:
    """Return why ``path`` is a protected system path, or None when it is not."""
    if path in PROTECTED_EXACT:
        return (
            f"{escape_path(path)} is a system directory and is never purged as a whole"
        )
    for tree in trees:
        if is_within(path, tree):
            return f"{escape_path(path)} lies in the protected path {tree}"
    return None


def state_directory_reason(path: str, state_dirs: tuple[str, ...]) -> str | None:
    """Return why ``path`` lies in Lethe's state directory, or None when it does not."""
    for tree in state_dirs:
        if is_within(path, tree):
            return (
                f"{escape_path(path)} lies in Lethe's state directory {tree}, which "
                "contains the journal, the signing key and the certificates"
            )
    return None
