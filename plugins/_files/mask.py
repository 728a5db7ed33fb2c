"""The ``mask`` method of the local-files plugin: rewrite, overwrite, replace.

A file under a hold with a mask spec is kept with its personal fields
replaced. The purge path writes a masked copy of the CSV or JSON file
beside it under a hidden name and flushes it. It then overwrites the
original's blocks in place, with the same passes and read-back as a purge,
and renames the copy over the original name. The rename unlinks the
overwritten inode in the same step as the masked file takes its name, so
the path always names a file. The ext4 journal is zeroed afterwards as for
a purge. Verification checks that the path names a new file without the
old values, and scans the raw device for them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from plugins._files import mounts as mountinfo
from plugins._files.paths import escape_path, unescape_path
from plugins._files.walk import identity
from plugins.base import (
    Check,
    Decision,
    Item,
    Method,
    PlannedItem,
    PurgeResult,
    Refusal,
)
from plugins.errors import ItemChanged
from plugins.masking import (
    HMAC,
    Masker,
    MaskingError,
    MaskStats,
    ValueCollector,
    file_format,
    load_key,
    mask_stream,
    open_text,
)
from plugins.scan import CHUNK, FingerprintScanner

if TYPE_CHECKING:
    from plugins._files.purge import BatchPurge
    from plugins.files import FilesPlugin

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_COPY_PREFIX = ".lethe-mask-"
_FORMATS = "CSV (.csv, .tsv) and JSON (.json, .jsonl, .ndjson)"
_HMAC_RESIDUAL = (
    "Fields masked with hmac can be recovered by anyone who holds the mask key "
    "and tries every possible value, which is quick for short values such as "
    "phone numbers; protect or destroy the key accordingly."
)


def copy_name(name: str) -> str:
    """Return the hidden name of the masked copy of a file called ``name``.

    The name depends only on the original's, so a run that finds a copy
    left by an interrupted run stops rather than overwrite it.
    """
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f"{_COPY_PREFIX}{digest}"


def is_mask_copy(key: str) -> bool:
    """Tell whether an item key names a masked copy that a masking run left."""
    name = os.path.basename(unescape_path(key))
    return name.startswith(_COPY_PREFIX) and len(name) == len(_COPY_PREFIX) + 16


def mask_copy_refusal(key: str) -> Refusal:
    """Return the refusal that keeps a masked copy left by an interrupted run.

    After an interruption between the overwrite and the rename, that copy
    is the only masked version of a kept file, so no plan destroys it.
    """
    return Refusal(
        "in-use",
        f"{key} is a masked copy left by an interrupted masking run; rename it to "
        "its original name or remove it by hand",
    )


# -- plan ---------------------------------------------------------------------


def plan_mask(plugin: FilesPlugin, item: Item, spec: Mapping[str, Any]) -> Decision:
    """Check that a file can be masked and take fingerprints of its personal values."""
    refusal = _mask_refusal(plugin, item)
    if refusal is not None:
        return Decision(refusal=refusal)
    path = unescape_path(item.key)
    file_kind = file_format(os.path.basename(path))
    try:
        if spec.get("key_file"):
            load_key(spec["key_file"])
        stats = _original_values(path, item, file_kind or "", spec)
    except MaskingError as error:
        return _not_supported(f"cannot mask {item.key}: {error}")

    uses_hmac = any(
        options.get("method") == HMAC for options in spec["fields"].values()
    )
    return Decision(
        method=Method.MASK,
        fingerprints=tuple(stats.fingerprints),
        residual=(_HMAC_RESIDUAL,) if uses_hmac else (),
        params={**plugin._method_params(), "mask": dict(spec)},
    )


def _mask_refusal(plugin: FilesPlugin, item: Item) -> Refusal | None:
    """Return why an item cannot be masked, or None when it can."""
    refusal = item.attributes.get("refusal")
    if refusal:
        return Refusal(refusal["reason"], refusal["detail"])
    if item.kind != "file":
        return _unsupported(
            f"{item.key} is a {item.kind}; only {_FORMATS} files can be masked"
        )
    links = item.attributes.get("links") or [item.key]
    if len(links) > 1:
        return _unsupported(
            f"{item.key} has {len(links)} hard links in the target; masking replaces "
            "the file under one name, so it is not masked"
        )
    if file_format(os.path.basename(unescape_path(item.key))) is None:
        return _unsupported(f"{item.key}: only {_FORMATS} files can be masked")
    plugin._open.refresh(max_age=30.0)
    holders = plugin._open.holders(item.identity["dev"], item.identity["ino"])
    if holders:
        return Refusal("open-file", f"{item.key} is open in {', '.join(holders[:3])}")
    return None


def _unsupported(detail: str) -> Refusal:
    return Refusal("not-supported", detail)


def _not_supported(detail: str) -> Decision:
    return Decision(refusal=Refusal("not-supported", detail))


def _original_values(
    path: str, item: Item, file_kind: str, spec: Mapping[str, Any]
) -> MaskStats:
    """Read the file once and collect the values that masking will replace."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
    except OSError as error:
        raise ItemChanged(
            f"cannot open {item.key} to plan masking: {error.strerror}"
        ) from None
    try:
        status = os.fstat(descriptor)
    except OSError as error:
        os.close(descriptor)
        raise ItemChanged(f"cannot inspect {item.key}: {error.strerror}") from None
    if not stat.S_ISREG(status.st_mode) or identity(status) != dict(item.identity):
        os.close(descriptor)
        raise ItemChanged(f"{item.key} changed after discovery; plan again")
    collector = ValueCollector(spec["fields"])
    try:
        with open_text(descriptor, "r", file_kind) as source:
            return mask_stream(file_kind, source, None, collector, item.key)
    except OSError as error:
        raise ItemChanged(
            f"cannot read {item.key} to plan masking: {error.strerror}"
        ) from None


# -- purge --------------------------------------------------------------------


def mask_files(
    runner: BatchPurge, group: Sequence[PlannedItem]
) -> Iterator[PurgeResult]:
    """Mask each planned file of a batch, one at a time, and yield its result."""
    from plugins._files.purge import _Failed

    for planned in group:
        if runner.context.should_stop():
            return  # items not started stay planned in the journal
        try:
            result = _mask_one(runner, planned)
        except _Failed as failure:
            result = dataclasses.replace(failure.result, method=Method.MASK)
        runner._log_result(result)
        yield result


def _mask_one(runner: BatchPurge, planned: PlannedItem) -> PurgeResult:
    from plugins._files.purge import _close

    work = runner._prepare(planned)
    try:
        parent_fd, name = work.links[0]
        copy, stats = _write_copy(runner, planned, parent_fd, name, work.descriptor)
        results: dict[str, PurgeResult] = {}
        if not runner._overwrite([work], results):
            failed = results[work.key]
            detail = (
                f"{failed.detail} The masked copy is kept as {escape_path(copy)} in the "
                "same directory; rename it to the original name once the device works."
            )
            return dataclasses.replace(failed, detail=detail, method=Method.MASK)
        return _replace_original(planned, work, parent_fd, name, copy, stats)
    finally:
        _close(work.descriptor)


def _write_copy(
    runner: BatchPurge,
    planned: PlannedItem,
    parent_fd: int,
    name: str,
    original_fd: int,
) -> tuple[str, MaskStats]:
    """Write and flush the masked copy; the original is not changed yet."""
    from plugins._files.purge import _fail

    key = planned.item.key
    spec = planned.decision.params["mask"]
    file_kind = file_format(name)
    copy = copy_name(name)
    try:
        masker = Masker.from_spec(spec)
    except MaskingError as error:
        raise _fail(key, f"cannot mask {key}: {error}; nothing was changed") from None
    original = os.fstat(original_fd)
    try:
        source_fd = os.open(name, os.O_RDONLY | _OPEN_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        raise _fail(
            key, f"cannot open {key} to mask it: {error.strerror}; nothing was changed"
        ) from None
    if (os.fstat(source_fd).st_ino, os.fstat(source_fd).st_dev) != (
        original.st_ino,
        original.st_dev,
    ):
        os.close(source_fd)
        raise _fail(
            key, f"{key} was replaced while it was being masked; nothing was changed"
        )
    try:
        copy_fd = os.open(
            copy,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS,
            0o600,
            dir_fd=parent_fd,
        )
    except FileExistsError:
        os.close(source_fd)
        raise _fail(
            key,
            f"{escape_path(copy)} beside {key} is left from an interrupted masking run; "
            "nothing was changed. If the original is intact, remove that file and run "
            "again; otherwise it is the masked file, so rename it to the original name",
        ) from None
    except OSError as error:
        os.close(source_fd)
        raise _fail(
            key,
            f"cannot create the masked copy of {key}: {error.strerror}; nothing was changed",
        ) from None
    try:
        with (
            open_text(source_fd, "r", file_kind) as source,
            open_text(copy_fd, "w", file_kind) as out,
        ):
            stats = mask_stream(file_kind, source, out, masker, key)
            out.flush()
            _copy_owner_and_mode(copy_fd, original)
            os.fsync(copy_fd)
    except (MaskingError, OSError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        os.unlink(copy, dir_fd=parent_fd)
        raise _fail(
            key, f"masking {key} failed: {reason}; the original was not changed"
        ) from None
    runner.log.debug(
        "masked copy written", item=key, records=stats.records, fields=stats.fields
    )
    return copy, stats


def _copy_owner_and_mode(descriptor: int, original: os.stat_result) -> None:
    current = os.fstat(descriptor)
    if (current.st_uid, current.st_gid) != (original.st_uid, original.st_gid):
        # Changing the owner clears set-user-ID bits, so the mode comes after it.
        os.fchown(descriptor, original.st_uid, original.st_gid)
    os.fchmod(descriptor, stat.S_IMODE(original.st_mode))


def _replace_original(
    planned: PlannedItem,
    work: Any,
    parent_fd: int,
    name: str,
    copy: str,
    stats: MaskStats,
) -> PurgeResult:
    """Rename the masked copy over the overwritten original, then free its blocks."""
    key = planned.item.key
    try:
        os.rename(copy, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        os.fsync(parent_fd)
        os.ftruncate(work.descriptor, 0)
        mountinfo.syncfs(parent_fd)
    except OSError as error:
        return PurgeResult(
            key,
            "failed",
            f"{key} was overwritten, but putting the masked copy {escape_path(copy)} in "
            f"its place failed: {error.strerror}; rename the copy to the original name",
            method=Method.MASK,
        )
    overwrite = work.overwrite
    return PurgeResult(
        key,
        "purged",
        f"masked {stats.fields} field(s) in {stats.records} record(s), overwrote the "
        f"original's {overwrite.allocated} allocated bytes with {work.passes_done} "
        "pass(es) and put the masked file in its place",
        bytes=overwrite.allocated,
        method=Method.MASK,
        facts={
            "records": stats.records,
            "fields": stats.fields,
            "allocated": overwrite.allocated,
            "passes": work.passes_done,
            "direct_io": overwrite.direct,
        },
    )


# -- verify -------------------------------------------------------------------


def masked_file_check(planned: PlannedItem) -> Check:
    """Check that the path names a new regular file that holds none of the old values."""
    item = planned.item
    path = unescape_path(item.key)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _OPEN_FLAGS)
    except FileNotFoundError:
        return Check("masked-file", False, f"{item.key} does not exist")
    except OSError as error:
        return Check("masked-file", False, f"cannot open {item.key}: {error.strerror}")
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            return Check("masked-file", False, f"{item.key} is not a regular file")
        if (status.st_dev, status.st_ino) == (
            item.identity["dev"],
            item.identity["ino"],
        ):
            return Check(
                "masked-file",
                False,
                f"{item.key} is still the original file (inode {status.st_ino})",
            )
        fingerprints = planned.decision.fingerprints
        if not fingerprints:
            return Check(
                "masked-file",
                True,
                f"{item.key} is a new file; its content was not searched because this "
                "process holds no fingerprints of the old values",
            )
        scanner = FingerprintScanner()
        scanner.add_all(item.key, fingerprints)
        hits = sum(1 for _ in scanner.scan_chunks(_chunks(descriptor)))
    except OSError as error:
        return Check("masked-file", False, f"cannot read {item.key}: {error.strerror}")
    finally:
        os.close(descriptor)
    if hits:
        return Check(
            "masked-file", False, f"{item.key} still holds {hits} old value(s)"
        )
    return Check(
        "masked-file",
        True,
        f"{item.key} is a new file and holds none of the {len(fingerprints)} old values",
    )


def _chunks(descriptor: int) -> Iterator[bytes]:
    while chunk := os.read(descriptor, CHUNK):
        yield chunk
