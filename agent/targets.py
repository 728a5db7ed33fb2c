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


#: Schemes whose URL path is a name prefix, mapped to how many path segments
#: after the host still name the container (1 in ``az://account/container``).
#: ``s3://b/cust`` selects ``cust2/x`` too, because names match as plain text.
NAME_PREFIX_SCHEMES = {"s3": 0, "gs": 0, "az": 1}


def targets_overlap(first: str, second: str) -> bool:
    """Tell whether two targets may share an item.

    Paths overlap when one contains the other. Object-store URLs overlap
    when they name the same bucket (and container) and one name prefix
    starts with the other, whether or not at a ``/``.
    """
    if target_contains(first, second) or target_contains(second, first):
        return True
    first_parts, second_parts = _name_prefix(first), _name_prefix(second)
    if first_parts is None or second_parts is None:
        return False
    if first_parts[0] != second_parts[0]:
        return False
    first_prefix, second_prefix = first_parts[1], second_parts[1]
    return first_prefix.startswith(second_prefix) or second_prefix.startswith(first_prefix)


def _name_prefix(url: str) -> tuple[str, str] | None:
    """Split an object-store URL into its bucket part and its name prefix."""
    scheme, separator, rest = url.partition("://")
    depth = NAME_PREFIX_SCHEMES.get(scheme)
    if not separator or depth is None:
        return None
    segments = rest.split("/", depth + 1)
    bucket = f"{scheme}://" + "/".join(segments[: depth + 1])
    prefix = segments[depth + 1] if len(segments) > depth + 1 else ""
    return bucket, prefix


def _comparable(url: str) -> str:
    url = url.removeprefix("file://")
    if "://" in url:
        return url
    return os.path.normpath(os.path.abspath(url))
