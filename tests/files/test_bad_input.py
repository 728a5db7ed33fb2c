"""Awkward names, missing targets, bad options and a device that fails mid-pass."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from plugins.errors import InvalidTarget, TargetNotFound
from plugins.files import FilesPlugin
from tests.helpers.driver import run_plugin
from tests.conftest import require_root, require_tool
from tests.files.conftest import canary_lines, make_filesystem, plan, purge, raw_image

CANARY = b"LETHE-CANARY-BADINPUT"


def test_newline_in_name_purged(ext4):
    target = ext4.mountpoint / "exports"
    target.mkdir()
    name = "customer\nexport-2024.csv"
    (target / name).write_bytes(canary_lines(CANARY.decode(), 200))
    os.sync()
    run = purge(target)
    keys = run.statuses()
    assert keys[str(target) + "/customer\\x0aexport-2024.csv"] == "purged"
    assert run.unverified() == []
    assert not target.exists()
    assert raw_image(ext4).count(CANARY) == 0


def test_invalid_utf8_name_purged(ext4):
    target = ext4.mountpoint / "exports"
    target.mkdir()
    raw_name = b"kunde-\xff\xfe-export.csv"
    with open(os.path.join(os.fsencode(target), raw_name), "wb") as handle:
        handle.write(canary_lines(CANARY.decode(), 200))
    os.sync()
    run = purge(target)
    keys = run.statuses()
    assert keys[str(target) + "/kunde-\\xff\\xfe-export.csv"] == "purged"
    assert run.unverified() == []
    assert not target.exists()
    image = raw_image(ext4)
    assert image.count(CANARY) == 0
    assert image.count(raw_name) == 0


def test_backslash_name_round_trips(ext4):
    path = ext4.mountpoint / "a\\x0a-literal-backslash.csv"
    path.write_bytes(b"literal backslash in the name\n")
    run = purge(path)
    assert run.statuses() == {
        str(ext4.mountpoint) + "/a\\\\x0a-literal-backslash.csv": "purged"
    }
    assert not path.exists()


def test_missing_target_raises_not_found(tmp_path):
    with pytest.raises(TargetNotFound, match="does not exist"):
        plan(tmp_path / "no-such-directory")


def test_unknown_option_raises_invalid_target(tmp_path):
    with pytest.raises(InvalidTarget, match="cross_filesystems"):
        plan(tmp_path, options={"follow_symlinks": True})


def test_remote_file_url_raises_invalid_target():
    with pytest.raises(InvalidTarget, match="only local paths"):
        plan("file://server.example/srv/exports")


def test_file_url_target(ext4):
    path = ext4.mountpoint / "space in name.csv"
    path.write_bytes(b"reached through a file URL\n")
    run = purge("file://" + urllib.parse.quote(str(path)))
    assert run.statuses() == {str(path): "purged"}
    assert not path.exists()


def test_invalid_passes_setting(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(b"x" * 100)
    with pytest.raises(InvalidTarget, match="passes"):
        plan(path, passes=0)


def _blocks(device: str, path: str) -> list[int]:
    output = subprocess.run(
        ["debugfs", "-R", f"blocks {path}", device],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(block) for block in output.split()]


def _fill(directory: Path) -> None:
    """Write to ``directory`` until its filesystem is full."""
    with open(directory / "filler", "wb") as handle:
        chunk = b"\0" * (1024 * 1024)
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass
        try:
            os.fsync(handle.fileno())
        except OSError:
            pass


def test_disk_full_mid_pass_reported(tmp_path: Path):
    """The disk under a loop device fills while a pass writes, so the pass fails.

    The inner filesystem lives in a sparse image on a small outer filesystem.
    The image's blocks under the file are punched out and the outer
    filesystem is filled, so writing those blocks again finds no space.
    """
    require_root()
    require_tool("debugfs")
    fallocate = require_tool("fallocate")
    for outer in make_filesystem(tmp_path, "ext4", size_mib=48):
        image = outer.mountpoint / "inner.img"
        with open(image, "wb") as handle:
            handle.truncate(32 * 1024 * 1024)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-b", "4096", str(image)],
            check=True,
            capture_output=True,
        )
        loop = subprocess.run(
            ["losetup", "--find", "--show", str(image)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        mountpoint = tmp_path / "inner-mnt"
        mountpoint.mkdir()
        try:
            subprocess.run(["mount", loop, str(mountpoint)], check=True)
            try:
                path = mountpoint / "customers.csv"
                path.write_bytes(canary_lines(CANARY.decode(), 50_000))
                os.sync()
                blocks = _blocks(loop, "/customers.csv")
                half = blocks[len(blocks) // 2 :]
                offset, length = half[0] * 4096, (half[-1] + 1 - half[0]) * 4096
                subprocess.run(
                    [
                        fallocate,
                        "--punch-hole",
                        "-o",
                        str(offset),
                        "-l",
                        str(length),
                        str(image),
                    ],
                    check=True,
                )
                _fill(outer.mountpoint)
                run = purge(path, scan_device=False)
                exists = path.exists()
            finally:
                subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        finally:
            subprocess.run(["losetup", "-d", loop], check=False)
        result = run.results[0]
        assert result.status == "failed"
        assert str(path) in result.detail
        assert "partly overwritten" in result.detail
        assert any(
            text in result.detail for text in ("No space left", "Input/output error")
        )
        assert exists


def test_free_space_wipe_unavailable(ext4, monkeypatch):
    # None in sys.modules makes the import fail as if the module were absent.
    monkeypatch.setitem(sys.modules, "plugins.freespace", None)
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(b"customer export\n")
    run = purge(path, options={"wipe_free_space": True})
    steps = {result.key: result for result in run.completion}
    assert run.statuses() == {str(path): "purged"}
    assert steps["wipe-free-space"].status == "failed"
    assert "not available" in steps["wipe-free-space"].detail


def _purge_on_tmpfs(tmp_path, settings: dict):
    require_root()
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)], check=True
    )
    try:
        target = mountpoint / "exports"
        target.mkdir()
        (target / "customers.csv").write_bytes(b"Ada Lovelace,+44 7700 900123\n" * 50)
        run = run_plugin(FilesPlugin, str(target), settings=settings)
        return run, target
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_unset_scan_skips_deviceless_filesystem(tmp_path):
    run, target = _purge_on_tmpfs(tmp_path, {})
    assert run.unverified() == []
    file_key = str(target / "customers.csv")
    evidence = next(ev for ev in run.evidence if ev.key == file_key)
    scan = next(check for check in evidence.checks if check.name == "device-scan")
    assert "no block device holds the filesystem" in scan.detail
    assert "skipped because scan_device is unset" in scan.detail


def test_required_scan_fails_deviceless_filesystem(tmp_path):
    run, target = _purge_on_tmpfs(tmp_path, {"scan_device": True})
    assert run.unverified() != []


@pytest.mark.parametrize("name", ["cross_filesystems", "keep_root", "wipe_free_space"])
def test_string_switch_option_rejected(tmp_path, name):
    target = tmp_path / "exports"
    target.mkdir()
    (target / "customers.csv").write_text("Ada Lovelace\n")
    with pytest.raises(InvalidTarget, match=f"{name} .* must be true or false"):
        run_plugin(FilesPlugin, str(target), options={name: "no"}, purge=False)
    assert (target / "customers.csv").exists()
