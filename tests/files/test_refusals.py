"""What the plan refuses, and that refused data is left exactly as it was (F2, F4-F7, F9)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

# Imported here because the unprivileged child of the permission test cannot
# read the interpreter's own module directory under /root.
import mmap  # noqa: F401
import plugins._files.purge  # noqa: F401
from plugins.base import JobContext, PlannedItem, Target
from plugins.files import FilesPlugin
from tests.conftest import require_tool
from tests.files.conftest import canary_lines, plan, purge, raw_image
from tests.helpers.loopfs import loop_filesystem

CANARY = b"LETHE-CANARY-REFUSED"


def test_btrfs_plan_refuses_copy_on_write(btrfs):
    path = btrfs.mountpoint / "customers.csv"
    path.write_bytes(canary_lines(CANARY.decode(), 2_000))
    run = purge(btrfs.mountpoint / "customers.csv")
    assert run.refusal_reasons() == {str(path): "copy-on-write"}
    assert run.results == []
    assert any("copy-on-write" in line for line in run.info.residual)
    assert path.read_bytes() == canary_lines(CANARY.decode(), 2_000)


def test_btrfs_snapshot_copy_untouched(btrfs):
    require_tool("btrfs")
    volume = btrfs.mountpoint / "volume"
    subprocess.run(
        ["btrfs", "subvolume", "create", str(volume)], check=True, capture_output=True
    )
    (volume / "customers.csv").write_bytes(canary_lines(CANARY.decode(), 2_000))
    snapshot = btrfs.mountpoint / "snapshot"
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", str(volume), str(snapshot)],
        check=True,
        capture_output=True,
    )
    run = purge(volume)
    assert run.refusal_reasons()[str(volume / "customers.csv")] == "copy-on-write"
    assert (snapshot / "customers.csv").read_bytes() == canary_lines(
        CANARY.decode(), 2_000
    )
    assert (volume / "customers.csv").exists()


def test_xfs_reflink_copy_refused(xfs):
    target = xfs.mountpoint / "exports"
    target.mkdir()
    original = target / "customers.csv"
    original.write_bytes(canary_lines(CANARY.decode(), 2_000))
    copy = xfs.mountpoint / "copy-outside.csv"
    subprocess.run(["cp", "--reflink=always", str(original), str(copy)], check=True)
    run = purge(target)
    reasons = run.refusal_reasons()
    assert reasons[str(original)] == "copy-on-write"
    assert reasons[str(target)] == "not-empty"
    assert "reflink" in run.refused[0].decision.refusal.detail
    assert copy.read_bytes() == canary_lines(CANARY.decode(), 2_000)
    assert original.read_bytes() == canary_lines(CANARY.decode(), 2_000)


def test_symlink_removed_destination_untouched(ext4, tmp_path):
    outside = ext4.mountpoint / "outside.csv"
    outside.write_bytes(b"keep this file intact\n")
    before = os.stat(outside)
    target = ext4.mountpoint / "exports"
    target.mkdir()
    (target / "report.csv").write_bytes(b"destroy this report\n")
    (target / "link-out").symlink_to(outside)
    run = purge(target)
    assert run.refusal_reasons() == {str(target / "link-out"): "symlink"}
    assert "never touched" in run.refused[0].decision.refusal.detail
    assert not os.path.lexists(target / "link-out")
    assert not target.exists()
    assert outside.read_bytes() == b"keep this file intact\n"
    assert os.stat(outside).st_mtime_ns == before.st_mtime_ns


def test_hard_link_outside_refused(ext4):
    target = ext4.mountpoint / "exports"
    target.mkdir()
    inside = target / "customers.csv"
    inside.write_bytes(canary_lines(CANARY.decode(), 500))
    outside = ext4.mountpoint / "kept-link.csv"
    os.link(inside, outside)
    run = purge(target)
    refusal = run.refused[0].decision.refusal
    assert run.refusal_reasons()[str(inside)] == "hard-link"
    assert str(inside) in refusal.detail
    assert str(outside) in refusal.detail
    assert outside.read_bytes() == canary_lines(CANARY.decode(), 500)
    assert inside.exists()


def test_hard_links_all_inside_purged(ext4):
    target = ext4.mountpoint / "exports"
    (target / "a").mkdir(parents=True)
    (target / "b").mkdir()
    first = target / "a" / "customers.csv"
    first.write_bytes(canary_lines(CANARY.decode(), 500))
    os.link(first, target / "b" / "second-link.csv")
    os.sync()
    run = purge(target)
    assert run.refused == []
    assert {result.status for result in run.results} == {"purged"}
    assert run.unverified() == []
    assert not target.exists()
    assert raw_image(ext4).count(CANARY) == 0


def test_immutable_directory_refused_at_plan(ext4):
    require_tool("chattr")
    target = ext4.mountpoint / "exports"
    (target / "locked").mkdir(parents=True)
    path = target / "locked" / "customers.csv"
    data = canary_lines(CANARY.decode(), 500)
    path.write_bytes(data)
    (target / "other.csv").write_bytes(canary_lines(CANARY.decode(), 10))
    subprocess.run(["chattr", "+i", str(path.parent)], check=True)
    try:
        run = purge(target)
    finally:
        subprocess.run(["chattr", "-i", str(path.parent)], check=True)
    assert run.refusal_reasons()[str(path)] == "permission"
    refusal = next(p for p in run.refused if p.item.key == str(path)).decision.refusal
    assert "chattr -i on the directory" in refusal.detail
    assert run.statuses()[str(target / "other.csv")] == "purged"
    assert "failed" not in run.statuses().values()
    assert path.read_bytes() == data


def _purge_as(uid: int, path: Path) -> list[tuple[str, ...]]:
    """Purge ``path`` in a forked child running as ``uid``; return its results."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        try:
            os.setgid(uid)
            os.setuid(uid)
            run = purge(path, scan_device=False)
            lines = [f"{r.key}\t{r.status}\t{r.detail}" for r in run.results]
            lines += [
                f"{p.item.key}\trefused\t{p.decision.refusal.detail}"
                for p in run.refused
            ]
            os.write(write_end, "\n".join(lines).encode())
        except BaseException as error:
            os.write(write_end, f"error\t{type(error).__name__}\t{error}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        output = stream.read().decode()
    os.waitpid(child, 0)
    return [tuple(line.split("\t")) for line in output.splitlines()]


@contextmanager
def public_mount(ext4):
    """Bind-mount the filesystem where another user can reach it.

    The pytest temporary directories are private to root.
    """
    public = Path(tempfile.mkdtemp(prefix="lethe-files-"))
    public.chmod(0o755)
    subprocess.run(["mount", "--bind", str(ext4.mountpoint), str(public)], check=True)
    try:
        yield public
    finally:
        subprocess.run(["umount", str(public)], check=True)
        public.rmdir()


def test_unwritable_file_as_user_refused(ext4):
    with public_mount(ext4) as public:
        target = public / "exports"
        target.mkdir()
        os.chown(target, 65534, 65534)
        path = target / "customers.csv"
        data = canary_lines(CANARY.decode(), 500)
        path.write_bytes(data)
        path.chmod(0o644)
        results = _purge_as(65534, target)
        kept = path.read_bytes()
    statuses = {key: status for key, status, _ in results}
    details = " ".join(detail for _, _, detail in results)
    assert statuses.get(str(path)) == "refused", results
    assert "not readable and writable by this user (uid 65534)" in details
    assert "failed" not in statuses.values()
    assert kept == data


def test_unwritable_directory_as_user_refused(ext4):
    # The pytest temporary directories are private to root, so the user
    # reaches the filesystem through a bind mount in a world-readable place.
    public = Path(tempfile.mkdtemp(prefix="lethe-files-"))
    public.chmod(0o755)
    subprocess.run(["mount", "--bind", str(ext4.mountpoint), str(public)], check=True)
    try:
        target = public / "exports"
        target.mkdir()
        path = target / "customers.csv"
        data = canary_lines(CANARY.decode(), 500)
        path.write_bytes(data)
        os.chown(path, 65534, 65534)
        results = _purge_as(65534, target)
        kept = path.read_bytes()
    finally:
        subprocess.run(["umount", str(public)], check=True)
        public.rmdir()
    statuses = {key: status for key, status, _ in results}
    details = " ".join(detail for _, _, detail in results)
    assert statuses.get(str(path)) == "refused", results
    assert "is not writable by this user (uid 65534)" in details
    assert "failed" not in statuses.values()
    assert kept == data


@pytest.mark.timeout(60)
def test_fifo_and_device_node_skipped(ext4):
    require_tool("mknod")
    target = ext4.mountpoint / "exports"
    target.mkdir()
    os.mkfifo(target / "pipe")
    subprocess.run(["mknod", str(target / "null-device"), "c", "1", "3"], check=True)
    (target / "report.csv").write_bytes(b"destroy this report\n")
    run = purge(target)
    assert run.refusal_reasons() == {
        str(target / "pipe"): "special-file",
        str(target / "null-device"): "special-file",
        str(target): "not-empty",
    }
    assert run.statuses() == {str(target / "report.csv"): "purged"}
    assert (target / "pipe").exists()
    assert (target / "null-device").exists()


def test_open_file_refused(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(b"held open by another process\n")
    with open(path, "rb") as handle:
        holder = subprocess.Popen(["sleep", "60"], stdin=handle)
    try:
        run = purge(path)
    finally:
        holder.kill()
        holder.wait()
    assert run.refusal_reasons() == {str(path): "open-file"}
    assert f"pid {holder.pid}" in run.refused[0].decision.refusal.detail
    assert path.read_bytes() == b"held open by another process\n"


def test_mapped_file_refused(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(b"mapped by another process\n")
    # The child maps the file with libc's mmap and closes its descriptor, so
    # only the mapping keeps the file in use (Python's mmap keeps its own
    # descriptor).
    script = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.mmap.restype = ctypes.c_void_p\n"
        "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,\n"
        "                      ctypes.c_int, ctypes.c_int, ctypes.c_long]\n"
        "descriptor = os.open(sys.argv[1], os.O_RDONLY)\n"
        "address = libc.mmap(None, 4096, 1, 1, descriptor, 0)\n"
        "os.close(descriptor)\n"
        "assert address not in (None, ctypes.c_void_p(-1).value)\n"
        "print('mapped', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout.readline() == b"mapped\n"
            run = purge(path)
        finally:
            holder.kill()
    assert run.refusal_reasons() == {str(path): "open-file"}
    assert f"pid {holder.pid}" in run.refused[0].decision.refusal.detail
    assert path.read_bytes() == b"mapped by another process\n"


def test_mount_point_below_target_refused(ext4, tmp_path):
    target = ext4.mountpoint / "exports"
    (target / "inner").mkdir(parents=True)
    (target / "report.csv").write_bytes(b"destroy this report\n")
    (tmp_path / "other").mkdir()
    with loop_filesystem(tmp_path / "other", "ext4", 16) as other:
        (other.mountpoint / "keep.csv").write_bytes(b"another filesystem\n")
        subprocess.run(
            ["mount", "--bind", str(other.mountpoint), str(target / "inner")],
            check=True,
        )
        try:
            run = purge(target)
            kept = (target / "inner" / "keep.csv").read_bytes()
        finally:
            subprocess.run(["umount", str(target / "inner")], check=True)
    assert run.refusal_reasons()[str(target / "inner")] == "mount-point"
    assert run.statuses()[str(target / "report.csv")] == "purged"
    assert kept == b"another filesystem\n"


def test_mount_point_detail_names_filesystem(ext4, tmp_path):
    target = ext4.mountpoint / "exports"
    (target / "inner").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    with loop_filesystem(tmp_path / "other", "ext4", 16) as other:
        subprocess.run(
            ["mount", "--bind", str(other.mountpoint), str(target / "inner")],
            check=True,
        )
        try:
            run = plan(target)
        finally:
            subprocess.run(["umount", str(target / "inner")], check=True)
    refused = {entry.item.key: entry.decision.refusal for entry in run.refused}
    detail = refused[str(target / "inner")].detail
    assert f"mount point of another filesystem (ext4 on {other.device})" in detail
    assert "cross_filesystems: true" in detail


def test_bind_mount_below_target_explained(ext4):
    target = ext4.mountpoint / "exports"
    (target / "inner").mkdir(parents=True)
    (target / "report.csv").write_bytes(b"destroy this report\n")
    elsewhere = ext4.mountpoint / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.csv").write_bytes(b"reachable from two places\n")
    subprocess.run(
        ["mount", "--bind", str(elsewhere), str(target / "inner")], check=True
    )
    try:
        run = purge(target)
    finally:
        subprocess.run(["umount", str(target / "inner")], check=True)
    refused = {entry.item.key: entry.decision.refusal for entry in run.refused}
    refusal = refused[str(target / "inner")]
    assert refusal.reason == "mount-point"
    assert "is a bind mount of /elsewhere of the target's own ext4" in refusal.detail
    assert "another filesystem" not in refusal.detail
    assert "Unmount it (umount)" in refusal.detail
    assert run.statuses()[str(target / "report.csv")] == "purged"
    assert (elsewhere / "keep.csv").read_bytes() == b"reachable from two places\n"


def test_mounts_below_noted_only_when_present(ext4, tmp_path):
    target = ext4.mountpoint / "exports"
    (target / "inner").mkdir(parents=True)
    (target / "report.csv").write_bytes(b"destroy this report\n")
    without = plan(target).info.notes
    (tmp_path / "other").mkdir()
    with loop_filesystem(tmp_path / "other", "ext4", 16) as other:
        subprocess.run(
            ["mount", "--bind", str(other.mountpoint), str(target / "inner")],
            check=True,
        )
        try:
            with_mount = plan(target).info.notes
            crossing = plan(target, options={"cross_filesystems": True}).info.notes
        finally:
            subprocess.run(["umount", str(target / "inner")], check=True)
    assert not any("mounts below the target" in note for note in without)
    assert any(
        f"mounts below the target ({target / 'inner'})" in note for note in with_mount
    )
    assert not any("mounts below the target" in note for note in crossing)


def test_system_paths_protected():
    for path in ("/", "/etc", "/usr/share/doc", "/boot"):
        run = plan(path)
        assert run.refusal_reasons() == {path: "protected-path"}


def test_protected_paths_setting(ext4):
    target = ext4.mountpoint / "exports"
    (target / "keep").mkdir(parents=True)
    (target / "keep" / "ledger.csv").write_bytes(b"retained\n")
    (target / "report.csv").write_bytes(b"destroy this report\n")
    run = purge(target, protected_paths=[str(target / "keep")])
    assert run.refusal_reasons()[str(target / "keep")] == "protected-path"
    assert run.statuses()[str(target / "report.csv")] == "purged"
    assert (target / "keep" / "ledger.csv").read_bytes() == b"retained\n"


def test_readback_mismatch_fails_verification(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(canary_lines(CANARY.decode(), 500))
    run = purge(path, inject_readback_mismatch=True)
    checks = {check.name: check for check in run.evidence[0].checks}
    assert run.results[0].status == "purged"
    assert not checks["read-back"].passed
    assert "differs" in checks["read-back"].detail
    assert not run.evidence[0].verified


def test_file_swapped_for_symlink_after_plan(ext4):
    outside = ext4.mountpoint / "outside.csv"
    outside.write_bytes(b"keep this file intact\n")
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(b"planned file\n")
    plugin = FilesPlugin(Target(str(path)), JobContext(dry_run=False))
    plugin.describe()
    planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
    path.unlink()
    path.symlink_to(outside)
    results = list(plugin.purge(planned))
    plugin.close()
    assert results[0].status == "failed"
    assert "symbolic link" in results[0].detail or "replaced" in results[0].detail
    assert outside.read_bytes() == b"keep this file intact\n"
    assert path.is_symlink()


def test_file_changed_after_plan_untouched(ext4):
    path = ext4.mountpoint / "customers.csv"
    path.write_bytes(b"planned file\n")
    plugin = FilesPlugin(Target(str(path)), JobContext(dry_run=False))
    plugin.describe()
    planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
    path.write_bytes(b"rewritten after the plan, longer\n")
    results = list(plugin.purge(planned))
    plugin.close()
    assert results[0].status == "failed"
    assert "changed after the plan" in results[0].detail
    assert path.read_bytes() == b"rewritten after the plan, longer\n"


def test_cross_filesystems_purges_mounted_files(ext4, tmp_path):
    target = ext4.mountpoint / "exports"
    (target / "inner").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    with loop_filesystem(tmp_path / "other", "ext4", 16) as other:
        (other.mountpoint / "nested-customers.csv").write_bytes(
            canary_lines(CANARY.decode(), 300)
        )
        os.sync()
        subprocess.run(
            ["mount", "--bind", str(other.mountpoint), str(target / "inner")],
            check=True,
        )
        try:
            run = purge(target, options={"cross_filesystems": True})
        finally:
            subprocess.run(["umount", str(target / "inner")], check=True)
        image = raw_image(other)
    key = str(target / "inner" / "nested-customers.csv")
    evidence = {entry.key: entry for entry in run.evidence}
    scan = {check.name: check for check in evidence[key].checks}["device-scan"]
    assert run.statuses()[key] == "purged"
    assert other.device in scan.detail
    assert evidence[key].verified
    assert image.count(CANARY) == 0


def test_immutable_file_refused_others_purged(ext4):
    require_tool("chattr")
    target = ext4.mountpoint / "exports"
    target.mkdir()
    for name in ("a-customers.csv", "b-customers.csv", "c-customers.csv"):
        (target / name).write_bytes(canary_lines(CANARY.decode(), 100))
    locked = target / "b-customers.csv"
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    try:
        run = purge(target)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    statuses = run.statuses()
    assert statuses[str(target / "a-customers.csv")] == "purged"
    assert statuses[str(target / "c-customers.csv")] == "purged"
    assert run.refusal_reasons()[str(locked)] == "permission"
    refusal = next(p for p in run.refused if p.item.key == str(locked)).decision.refusal
    assert "chattr -i" in refusal.detail
    assert locked.read_bytes() == canary_lines(CANARY.decode(), 100)


def test_immutable_after_plan_fails_untouched(ext4):
    require_tool("chattr")
    target = ext4.mountpoint / "exports"
    target.mkdir()
    locked = target / "b-customers.csv"
    locked.write_bytes(canary_lines(CANARY.decode(), 100))
    context = JobContext(job_id="test", dry_run=False, settings={"scan_device": False})
    plugin = FilesPlugin(Target(str(target)), context)
    try:
        plugin.describe()
        planned = [PlannedItem(i, plugin.plan_item(i)) for i in plugin.discover()]
        entry = next(p for p in planned if p.item.key == str(locked))
        assert entry.decision.permitted
        subprocess.run(["chattr", "+i", str(locked)], check=True)
        try:
            results = list(plugin.purge([entry]))
        finally:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
    finally:
        plugin.close()
    assert [result.status for result in results] == ["failed"]
    assert "nothing was overwritten" in results[0].detail
    assert locked.read_bytes() == canary_lines(CANARY.decode(), 100)


def test_file_moved_onto_name_during_purge(tmp_path: Path, monkeypatch) -> None:
    # Another file moved onto a planned name after the overwrite started must
    # be left in place, and the planned item must fail rather than pass.
    from plugins._files import purge as purge_module

    target = tmp_path / "exports"
    target.mkdir()
    victim = target / "big.csv"
    victim.write_bytes(os.urandom(64 * 1024))
    newcomer = tmp_path / "newcomer"
    newcomer.write_text("REPLACED after planning\n")
    original = purge_module._rename_random

    def swap_then_rename(parent_fd: int, name: str) -> str:
        if name == "big.csv" and newcomer.exists():
            os.rename(newcomer, victim)
        return original(parent_fd, name)

    monkeypatch.setattr(purge_module, "_rename_random", swap_then_rename)
    run = purge(target)
    result = {r.key: r for r in run.results}[str(victim)]
    assert result.status == "failed"
    assert "now leads to another file" in result.detail
    assert victim.read_text() == "REPLACED after planning\n"
