"""Purged files leave neither content nor names on the raw image.

Each destroy test has a control that removes the same data with plain
``rm`` (or a truncating rewrite) and finds it still on the image, so the
raw-image assertions can fail.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

from plugins._files.mounts import xfs_log_range
from plugins.scan import FingerprintScanner, content_fingerprints, token_fingerprints
from tests.conftest import require_root, require_tool
from tests.files.conftest import canary_lines, make_filesystem, plan, purge, raw_image
from tests.helpers.loopfs import loop_filesystem

CANARY = b"LETHE-CANARY-F1"
NAME_CANARY = "Jane-Doe-ID-8812345678.csv"


def deleted_names(device: str) -> str:
    """Return sleuthkit's listing of deleted directory entries on ``device``."""
    fls = require_tool("fls")
    os.sync()
    return subprocess.run(
        [fls, "-rd", device], capture_output=True, text=True, check=True
    ).stdout


def test_ext4_file_content_gone(ext4):
    target = ext4.mountpoint / "exports"
    target.mkdir()
    (target / "customers.csv").write_bytes(canary_lines(CANARY.decode(), 20_000))
    os.sync()
    run = purge(target)
    assert run.statuses() == {
        str(target / "customers.csv"): "purged",
        str(target): "purged",
    }
    assert run.unverified() == []
    assert raw_image(ext4).count(CANARY) == 0
    assert not target.exists()


def test_ext4_rm_leaves_content(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(canary_lines(CANARY.decode(), 20_000))
    os.sync()
    subprocess.run(["rm", str(path)], check=True)
    assert raw_image(ext4).count(CANARY) > 0


def test_ext4_truncating_rewrite_leaves_content(ext4):
    path = ext4.mountpoint / "customers.csv"
    data = canary_lines(CANARY.decode(), 20_000)
    path.write_bytes(data)
    os.sync()
    # A rewrite through O_TRUNC frees the old blocks and writes new ones.
    with open(path, "wb") as handle:
        handle.write(os.urandom(len(data)))
        os.fsync(handle.fileno())
    path.unlink()
    assert raw_image(ext4).count(CANARY) > 0


def test_ext4_overwrite_evidence_lists_checks(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(canary_lines(CANARY.decode(), 2_000))
    run = purge(path)
    checks = {check.name: check for check in run.evidence[0].checks}
    assert set(checks) == {"path-gone", "no-leftover", "read-back", "device-scan"}
    assert checks["read-back"].passed
    assert "matched" in checks["read-back"].detail
    assert checks["device-scan"].passed
    assert ext4.device in checks["device-scan"].detail


def test_xfs_file_content_gone(xfs):
    target = xfs.mountpoint / "exports"
    target.mkdir()
    (target / NAME_CANARY).write_bytes(canary_lines(CANARY.decode(), 20_000))
    os.sync()
    run = purge(target)
    assert run.unverified() == []
    assert raw_image(xfs).count(CANARY) == 0
    assert not target.exists()


def test_xfs_name_only_in_log(xfs):
    target = xfs.mountpoint / "exports"
    target.mkdir()
    (target / NAME_CANARY).write_bytes(canary_lines(CANARY.decode(), 200))
    os.sync()
    run = purge(target)
    image = raw_image(xfs)
    log_start, log_end = xfs_log_range(str(xfs.image))
    offsets = [
        match.start() for match in re.finditer(re.escape(NAME_CANARY.encode()), image)
    ]
    scan = {check.name: check for check in run.evidence[0].checks}["device-scan"]
    assert [offset for offset in offsets if not log_start <= offset < log_end] == []
    assert scan.passed
    if offsets:
        assert "xfs log" in scan.detail


def test_xfs_rm_leaves_content(xfs):
    path = xfs.mountpoint / NAME_CANARY
    path.write_bytes(canary_lines(CANARY.decode(), 20_000))
    os.sync()
    subprocess.run(["rm", str(path)], check=True)
    assert raw_image(xfs).count(CANARY) > 0


def test_xfs_plan_names_log_residual(xfs):
    (xfs.mountpoint / "a.csv").write_bytes(b"x")
    run = plan(xfs.mountpoint / "a.csv")
    assert any("xfs log" in line for line in run.info.residual)


def test_canary_name_gone_ext4(ext4):
    target = ext4.mountpoint / "exports"
    target.mkdir()
    (target / NAME_CANARY).write_bytes(b"invoice total 42.00 EUR, paid\n")
    os.sync()
    run = purge(target)
    assert run.unverified() == []
    assert raw_image(ext4).count(NAME_CANARY.encode()) == 0
    assert NAME_CANARY not in deleted_names(ext4.device)


def test_canary_name_rm_control(ext4):
    path = ext4.mountpoint / NAME_CANARY
    path.write_bytes(b"invoice total 42.00 EUR, paid\n")
    os.sync()
    subprocess.run(["rm", str(path)], check=True)
    assert raw_image(ext4).count(NAME_CANARY.encode()) > 0


def test_ext4_plan_names_journal_residual(ext4):
    (ext4.mountpoint / "a.csv").write_bytes(b"x")
    run = plan(ext4.mountpoint / "a.csv")
    assert any("ext4 journal" in line for line in run.info.residual)


def test_sparse_file_holes_stay_holes(tmp_path):
    for filesystem in make_filesystem(tmp_path, "ext4", size_mib=55):
        path = filesystem.mountpoint / "sparse.bin"
        with open(path, "wb") as handle:
            handle.truncate(100 * 1024 * 1024)
            for offset in (0, 40 * 1024 * 1024, 99 * 1024 * 1024):
                handle.seek(offset)
                handle.write(canary_lines(CANARY.decode(), 2_000))
        os.sync()
        allocated = os.stat(path).st_blocks * 512
        run = purge(path)
        result = run.results[0]
        assert result.status == "purged"
        assert result.facts["allocated"] <= allocated
        assert result.facts["allocated"] < 1024 * 1024
        assert run.unverified() == []
        assert raw_image(filesystem).count(CANARY) == 0


def test_nested_tree_leaves_nothing(ext4):
    target = ext4.mountpoint / "tree"
    names = []
    for index in range(1_000):
        directory = target / f"level-{index % 10:02d}" / f"sublevel-{index % 7:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        name = f"record-{index:05d}-customer.txt"
        (directory / name).write_bytes(f"{CANARY.decode()} record {index}\n".encode())
        names.append(name)
    os.sync()
    run = purge(target)
    assert len(run.results) == 1_000 + 10 + 70 + 1
    assert {result.status for result in run.results} == {"purged"}
    assert run.unverified() == []
    assert sorted(os.listdir(ext4.mountpoint)) == ["lost+found"]
    image = raw_image(ext4)
    assert image.count(CANARY) == 0
    assert [name for name in names if name.encode() in image] == []
    listing = deleted_names(ext4.device)
    assert [name for name in names if name in listing] == []


def _copy_documentation(destination: Path, limit: int) -> list[Path]:
    """Copy regular files from /usr/share/doc until ``limit`` bytes are copied."""
    copied: list[Path] = []
    total = 0
    for directory, _, files in sorted(os.walk("/usr/share/doc")):
        for name in sorted(files):
            source = Path(directory) / name
            if source.is_symlink() or not source.is_file():
                continue
            relative = source.relative_to("/usr/share/doc")
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination / relative)
            copied.append(destination / relative)
            total += source.stat().st_size
            if total >= limit:
                return copied
    return copied


def test_real_documentation_tree_leaves_no_fingerprint(tmp_path):
    for filesystem in make_filesystem(tmp_path, "ext4", size_mib=96):
        target = filesystem.mountpoint / "doc"
        copied = _copy_documentation(target, 8 * 1024 * 1024)
        scanner = FingerprintScanner()
        for path in copied:
            scanner.add_all(str(path), content_fingerprints(path.read_bytes()))
        names = {token for path in copied for token in token_fingerprints(path.name)}
        names = {token for token in names if len(token) >= 12}
        os.sync()
        before = {hit.owner for hit in scanner.scan_chunks([raw_image(filesystem)])}
        run = purge(target)
        image = raw_image(filesystem)
        after = [hit.owner for hit in scanner.scan_chunks([image])]
        assert len(copied) > 100
        assert len(names) > 20
        assert len(before) > 100
        assert {result.status for result in run.results} == {"purged"}
        assert run.unverified() == []
        assert after == []
        assert sorted(name for name in names if name in image) == []
        assert not target.exists()


def test_random_data_multiple_passes_and_zero(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(canary_lines(CANARY.decode(), 5_000) + random.randbytes(10_000))
    run = purge(path, passes=3, final_zero=True, readback=0.5)
    result = run.results[0]
    assert result.facts["passes"] == 4
    assert "zeros" in result.facts["readback"]
    assert run.unverified() == []
    assert raw_image(ext4).count(CANARY) == 0


def test_ext4_plan_names_journal_residual(ext4):
    target = ext4.mountpoint / "exports"
    target.mkdir()
    (target / "customers.csv").write_bytes(canary_lines(CANARY.decode(), 10))
    residual = plan(target).info.residual
    assert [text for text in residual if "ext4 journal" in text]


def test_ext4_without_journal_purges_cleanly(tmp_path):
    require_root()
    require_tool("mkfs.ext4")
    with loop_filesystem(tmp_path, "ext4", mkfs_options=("-O", "^has_journal")) as fs:
        target = fs.mountpoint / "exports"
        target.mkdir()
        (target / "customers.csv").write_bytes(canary_lines(CANARY.decode(), 2_000))
        os.sync()
        planned = plan(target)
        assert not [text for text in planned.info.residual if "ext4 journal" in text]
        run = purge(target)
        steps = {result.key: result for result in run.completion}
        assert steps["zero-journal"].status == "purged"
        assert "no ext4 journal" in steps["zero-journal"].detail
        assert run.unverified() == []
        assert raw_image(fs).count(CANARY) == 0
