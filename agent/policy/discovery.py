"""Content discovery: run the detectors over files and sampled database rows.

CSV, JSON, JSON Lines and plain text are scanned as UTF-8 bytes, streaming,
so a file of any size needs one chunk of memory. A CSV or JSON file whose
header or keys contain a mobile context word (``phone``, ``手机``) counts
11-digit mobile numbers anywhere in the file. Office documents are read
when their libraries are installed (``openpyxl`` for ``.xlsx``,
``python-docx`` for ``.docx``: the ``office`` extra); otherwise they are
reported as not scanned. Binary files are not scanned: files with a
suffix in :data:`BINARY_SUFFIXES` are not opened, and other files are
skipped when their first 8 KiB contain a NUL byte.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .detectors import CHUNK, Findings, Scanner

TEXT_SUFFIXES = frozenset(
    [
        ".csv",
        ".tsv",
        ".txt",
        ".log",
        ".json",
        ".jsonl",
        ".ndjson",
        ".xml",
        ".yaml",
        ".yml",
        ".sql",
        ".md",
        ".html",
        ".htm",
    ]
)
OFFICE_SUFFIXES = frozenset((".xlsx", ".docx"))
#: Suffixes of binary formats that are never opened for discovery.
BINARY_SUFFIXES = frozenset(
    [
        ".7z", ".avi", ".bin", ".bz2", ".class", ".db", ".dll", ".exe", ".gif",
        ".gz", ".iso", ".jar", ".jpeg", ".jpg", ".mkv", ".mov", ".mp3", ".mp4",
        ".o", ".pdf", ".png", ".so", ".sqlite", ".sqlite3", ".tar", ".tgz",
        ".wav", ".webp", ".xz", ".zip", ".zst",
    ]
)  # fmt: skip
#: Bytes a scanner reads, in one file or summed over the files before it,
#: before discovery loads the compiled loop (when numba is installed).
#: Once loaded, every later file uses it. Loading took about 0.5 s on a
#: 2-core VM at a load average of 5, which the array scanner's 0.2 s per
#: 16 MiB of a CSV export repays from about 32 MiB on.
COMPILED_MIN_BYTES = 32 * 1024 * 1024
#: Bytes read to decide whether a file without a known suffix is text.
SNIFF_BYTES = 8192


def looks_binary(head: bytes) -> bool:
    """Tell whether the start of a file looks binary (it contains a NUL byte)."""
    return b"\x00" in head


def _read_chunks(handle: Any, limit: int | None, findings: Findings) -> Iterator[bytes]:
    remaining = limit
    while True:
        size = CHUNK if remaining is None else min(CHUNK, remaining)
        if size <= 0:
            if handle.read(1):
                findings.truncated = True
            return
        chunk = handle.read(size)
        if not chunk:
            return
        findings.scanned_bytes += len(chunk)
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def discover_file(
    path: str | os.PathLike[str],
    scanner: Scanner,
    max_bytes: int | None = None,
    workers: int = 1,
) -> Findings:
    """Scan one file and return its findings.

    ``max_bytes`` caps the bytes read; when the cap cuts the scan short,
    ``truncated`` is set. Symbolic links, FIFOs and other special files are
    not read. Once this file's scan and the bytes ``scanner`` read before
    reach :data:`COMPILED_MIN_BYTES`, the compiled loop is loaded. Without
    custom patterns, it then counts the file in windows that ``workers``
    threads scan; with them, it counts the built-in kinds of each chunk.
    Raises OSError when the file cannot be opened or read, which includes
    a symbolic link (ELOOP).
    """
    findings = Findings()
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in OFFICE_SUFFIXES:
        return _discover_office(path, suffix, scanner)
    if suffix in BINARY_SUFFIXES:
        findings.note = "binary format, not scanned"
        return findings
    # O_NOFOLLOW and O_NONBLOCK keep a symlink from being followed and a
    # FIFO from blocking the plan; only regular files are read.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    descriptor = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        findings.note = "not a regular file, not scanned"
        return findings
    with os.fdopen(descriptor, "rb", buffering=0) as handle:
        head = handle.read(SNIFF_BYTES)
        if suffix not in TEXT_SUFFIXES and looks_binary(head):
            findings.note = "binary file, not scanned"
            return findings
        first_line = head.split(b"\n", 1)[0]
        context = suffix in (".csv", ".tsv") and scanner.has_mobile_context(first_line)
        size = os.fstat(descriptor).st_size
        limit = size if max_bytes is None else min(size, max_bytes)
        if scanner.read_bytes + limit >= COMPILED_MIN_BYTES:
            scanner.compiled_scanner()
        scanner.read_bytes += limit
        if scanner.compiled is not None and not scanner.settings.custom:
            from .jitscan import count_file

            findings.truncated = limit < size
            findings.scanned_bytes = limit
            count_file(scanner.compiled, descriptor, limit, context, findings, workers)
            return findings
        handle.seek(0)
        scanner.count_stream(
            _read_chunks(handle, max_bytes, findings), findings, context
        )
    return findings


def _discover_office(
    path: str | os.PathLike[str], suffix: str, scanner: Scanner
) -> Findings:
    findings = Findings()
    try:
        if suffix == ".xlsx":
            texts = _xlsx_cells(path)
        else:
            texts = _docx_paragraphs(path)
        for text in texts:
            data = text.encode("utf-8", "surrogateescape")
            findings.scanned_bytes += len(data)
            for match in scanner.scan(data):
                findings.add(match)
    except ImportError:
        findings.note = f"{suffix} not scanned: install the 'office' extra"
    return findings


def _xlsx_cells(path: str | os.PathLike[str]) -> Iterator[str]:
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        for sheet in workbook.worksheets:
            for row in sheet.iter_rows(values_only=True):
                yield "\t".join("" if cell is None else str(cell) for cell in row)
    finally:
        workbook.close()


def _docx_paragraphs(path: str | os.PathLike[str]) -> Iterator[str]:
    import docx

    document = docx.Document(os.fspath(path))
    for paragraph in document.paragraphs:
        yield paragraph.text
    for table in document.tables:
        for row in table.rows:
            yield "\t".join(cell.text for cell in row.cells)


def discover_rows(
    rows: Iterable[Mapping[str, Any]], scanner: Scanner, sample: int | None = 1000
) -> Findings:
    """Scan up to ``sample`` rows (column name to value) and count per column.

    A column whose name contains a mobile context word counts 11-digit
    mobile numbers without further context. Bytes values are read as UTF-8.
    """
    findings = Findings()
    context_columns: dict[str, bool] = {}
    for index, row in enumerate(rows):
        if sample is not None and index >= sample:
            findings.truncated = True
            break
        findings.scanned_rows += 1
        for column, value in row.items():
            if value is None:
                continue
            if isinstance(value, bytes | bytearray | memoryview):
                data = bytes(value)
            else:
                data = str(value).encode("utf-8", "surrogateescape")
            findings.scanned_bytes += len(data)
            context = context_columns.get(column)
            if context is None:
                context = scanner.has_mobile_context(str(column).encode("utf-8"))
                context_columns[column] = context
            for match in scanner.scan(data, context):
                findings.add(match, column=str(column))
    return findings
