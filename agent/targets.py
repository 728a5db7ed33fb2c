"""Containment and overlap of target URLs, compared as text."""

from __future__ import annotations

import os


def target_contains(outer: str, inner: str) -> bool:
    """Tell whether target ``inner`` is ``outer`` or lies below it.

    Local paths (bare or ``file://``) are compared as normalised absolute
    paths. Other URLs are compared by prefix at a ``/`` boundary, so
    ``s3://b/a`` contains ``s3://b/a/x`` but not ``s3://b/ab``.
    """
    outer, inner = _comparable(outer), _comparable(inner)
    if inner == outer:
        return True
    prefix = outer if outer.endswith("/") else outer + "/"
    return inner.startswith(prefix)


def targets_overlap(first: str, second: str) -> bool:
    """Tell whether two targets share any item (one contains the other)."""
    return target_contains(first, second) or target_contains(second, first)


def _comparable(url: str) -> str:
    url = url.removeprefix("file://")
    if "://" in url:
        return url
    return os.path.normpath(os.path.abspath(url))
