"""Benchmark the local-files plugin's overwrite against shred and dd.

Runs on an ext4 image on a loop device that the script creates (root only)
and attaches with ``losetup --direct-io=on``, so that writes reach the disk
under the image rather than the image file's page cache:

1. one large file, one pass: Lethe (with and without the default full
   read-back) against ``shred -n1 --remove=unlink`` and against
   ``dd if=/dev/zero of=F bs=4M oflag=direct conv=notrunc``;
2. many small files: Lethe's discover, plan, purge and verification of the
   tree against ``find TREE -type f -exec shred -n1 --remove=unlink {} +``.
   Verification runs without the raw device scan (shred has none);
   --scan-device times that scan on its own.

Each tool gets a freshly written copy of the same data; every run is
repeated (--repeat, interleaved) and the median counts. Ratios above 1 mean
Lethe is faster. Use --size-mib and --files to run it small.

    sudo .venv/bin/python benchmarks/files_overwrite.py --size-mib 1024 --files 20000
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugins.base import JobContext, PlannedItem, Target, chunked  # noqa: E402
from plugins.files import FilesPlugin  # noqa: E402
from tests.helpers.loopfs import loop_filesystem  # noqa: E402

MIB = 1024 * 1024


def write_file(path: Path, size: int) -> None:
    """Write ``size`` random bytes and flush them, then drop the page cache."""
    block = os.urandom(4 * MIB)
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            count = min(remaining, len(block))
            handle.write(block[:count])
            remaining -= count
        handle.flush()
        os.fsync(handle.fileno())
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def write_tree(root: Path, files: int, size: int) -> None:
    """Write ``files`` files of ``size`` random bytes, 200 to a directory."""
    for index in range(files):
        directory = root / f"d{index // 200:04d}"
        if index % 200 == 0:
            directory.mkdir(parents=True)
        (directory / f"customer-{index:06d}.csv").write_bytes(os.urandom(size))
    os.sync()


def lethe(path: Path, scan: bool = False, **settings) -> dict[str, float]:
    """Plan, purge and verify ``path``; return each step's duration in seconds.

    The plan covers describe, discovery with refusal checks and fingerprint
    reads. The purge covers the overwrite, read-back, removal and the
    target-wide steps (on ext4, zeroing the journal). Verification checks
    that every path is gone and the read-back matched; ``scan`` also times
    the raw device scan on its own.
    """
    context = JobContext(
        job_id="bench", dry_run=False, settings={"scan_device": False, **settings}
    )
    plugin = FilesPlugin(Target(str(path)), context)
    times = {}
    started = time.perf_counter()
    plugin.describe()
    planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
    times["plan"] = time.perf_counter() - started
    started = time.perf_counter()
    for batch in chunked(planned, FilesPlugin.batch_size):
        results = list(plugin.purge(batch))
        failed = [result for result in results if result.status != "purged"]
        if failed:
            raise SystemExit(f"Lethe failed: {failed[0].detail}")
    list(plugin.complete())
    times["purge"] = time.perf_counter() - started
    started = time.perf_counter()
    for batch in chunked(planned, FilesPlugin.batch_size):
        for evidence in plugin.verify(batch):
            if not evidence.verified:
                raise SystemExit(f"Lethe verification failed for {evidence.key}")
    times["verify"] = time.perf_counter() - started
    if scan:
        context.settings["scan_device"] = True
        started = time.perf_counter()
        outcomes = plugin._scan_device()
        times["scan"] = time.perf_counter() - started
        if any(outcome.hits or not outcome.ran for outcome in outcomes.values()):
            raise SystemExit("the device scan found residue or did not run")
    plugin.close()
    return times


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def median(runs: list[float]) -> float:
    return sorted(runs)[len(runs) // 2]


def large_file(mount: Path, size_mib: int, repeat: int) -> None:
    size = size_mib * MIB
    path = mount / "large.bin"
    count = size // (4 * MIB)
    dd = ["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={count}", "oflag=direct"]
    runs: dict[str, list[float]] = {}
    plans: list[float] = []
    for _ in range(repeat):
        # Interleaved, so a burst of load from other processes hits every tool.
        write_file(path, size)
        times = lethe(path)
        plans.append(times["plan"])
        runs.setdefault("lethe", []).append(times["purge"])
        write_file(path, size)
        runs.setdefault("lethe-no-readback", []).append(
            lethe(path, readback=0)["purge"]
        )
        write_file(path, size)
        shred = ["shred", "-n1", "--remove=unlink", str(path)]
        runs.setdefault("shred", []).append(timed(shred))
        write_file(path, size)
        runs.setdefault("dd", []).append(timed([*dd, "conv=notrunc", "status=none"]))
        write_file(path, size)
        # The same writes followed by one fsync, as Lethe flushes after each pass.
        fsynced = [*dd, "conv=notrunc,fsync", "status=none"]
        runs.setdefault("dd-fsync", []).append(timed(fsynced))
    figures = {name: median(values) for name, values in runs.items()}
    planning = median(plans)
    path.unlink()
    print(
        f"\n{size_mib} MiB file, one pass (Lethe: purge step; its plan took {planning:.2f} s)"
    )
    for name, seconds in figures.items():
        print(f"  {name:20s} {seconds:7.2f} s  {size / MIB / seconds:8.1f} MiB/s")
    print(
        f"  ratio shred/lethe (full read-back)  {figures['shred'] / figures['lethe']:.2f}  (target >= 1)"
    )
    print(
        f"  ratio shred/lethe (no read-back)    {figures['shred'] / figures['lethe-no-readback']:.2f}"
    )
    for reference in ("dd", "dd-fsync"):
        for variant in ("lethe-no-readback", "lethe"):
            ratio = figures[reference] / figures[variant]
            print(f"  throughput {variant} / {reference}  {ratio:.2f}  (target >= 0.9)")


def small_files(
    mount: Path, files: int, size_kib: int, repeat: int, scan: bool
) -> None:
    tree = mount / "tree"
    shred = [
        "find",
        str(tree),
        "-type",
        "f",
        "-exec",
        "shred",
        "-n1",
        "--remove=unlink",
    ]
    shred += ["{}", "+"]
    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        write_tree(tree, files, size_kib * 1024)
        for step, seconds in lethe(tree, scan=scan).items():
            runs.setdefault(step, []).append(seconds)
        write_tree(tree, files, size_kib * 1024)
        runs.setdefault("shred", []).append(timed(shred))
        subprocess.run(["rm", "-r", str(tree)], check=True)
    figures = {step: median(values) for step, values in runs.items()}
    lethe_seconds = figures["plan"] + figures["purge"] + figures["verify"]
    print(f"\n{files} files of {size_kib} KiB")
    print(f"  lethe plan (discover, refusal checks, fingerprints) {figures['plan']:7.2f} s")
    print(f"  lethe purge (overwrite, read-back, remove)          {figures['purge']:7.2f} s")
    print(f"  lethe verify (paths gone, read-back results)        {figures['verify']:7.2f} s")
    if "scan" in figures:
        print(f"  lethe raw device scan (not in the ratios)           {figures['scan']:7.2f} s")
    print(f"  find -exec shred -n1 --remove=unlink                {figures['shred']:7.2f} s")
    print(
        f"  ratio shred/lethe (plan + purge + verify) {figures['shred'] / lethe_seconds:.2f}"
        "  (target >= 3)"
    )
    print(f"  ratio shred/lethe (purge only)            {figures['shred'] / figures['purge']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mib", type=int, default=1024, help="size of the large file in MiB"
    )
    parser.add_argument(
        "--files", type=int, default=20_000, help="number of small files"
    )
    parser.add_argument(
        "--file-kib", type=int, default=4, help="size of each small file in KiB"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per tool; the median counts"
    )
    parser.add_argument(
        "--scan-device",
        action="store_true",
        help="also time the raw device scan of the small-file purge",
    )
    parser.add_argument(
        "--directory",
        default=None,
        help="where to put the image (default: a temporary directory)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates a loop device")
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    image_mib = args.size_mib + args.files * max(args.file_kib, 4) * 2 // 1024 + 256
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
        with loop_filesystem(
            Path(directory), "ext4", image_mib, direct_io=True
        ) as filesystem:
            load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
            name = os.path.basename(filesystem.device)
            direct = Path(f"/sys/block/{name}/loop/dio").read_text().strip()
            print(
                f"ext4 image of {image_mib} MiB on {filesystem.device} (dio={direct}), "
                f"{os.cpu_count()} CPUs, load average {load}"
            )
            large_file(filesystem.mountpoint, args.size_mib, args.repeat)
            small_files(
                filesystem.mountpoint,
                args.files,
                args.file_kib,
                args.repeat,
                args.scan_device,
            )


if __name__ == "__main__":
    main()
