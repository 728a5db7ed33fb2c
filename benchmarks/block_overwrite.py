"""Overwrite and read-back throughput of the block plugin against dd and nwipe.

Creates a sparse image (2 GiB unless --size sets another size), attaches it as
a loop device, and times on that same device, in one run:

* ``dd if=/dev/zero of=DEV oflag=direct bs=4M`` (zero write, the reference),
* Lethe's overwrite: one pass of AES-CTR random data with O_DIRECT writes
  and fdatasync, timed as the whole purge call (with the in-use checks
  before it) and as the pass alone,
* ``nwipe --autonuke --nogui --method=zero --verify=off --noblank DEV``,
* ``dd if=DEV of=/dev/null iflag=direct bs=4M`` (read reference),
* Lethe's full read-back, which regenerates the keystream and compares.

Each figure is the median of --runs runs. Run as root; the loop device is
detached and the image removed at the end. Usage:

    sudo .venv/bin/python benchmarks/block_overwrite.py [--size 2G] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins import _overwrite
from plugins._overwrite import CHUNK, Keystream, aligned_buffer, release
from plugins.base import JobContext, PlannedItem, Target
from plugins.block import BlockPlugin

UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return time.perf_counter() - started


def lethe_pass(device: str) -> tuple[float, float, float]:
    """Return seconds of the purge call, of its pass alone, and of the full read-back."""
    context = JobContext(
        job_id="bench", dry_run=False, settings={"passes": 1, "readback": "full"}
    )
    plugin = BlockPlugin(Target(f"block://{device}"), context)
    try:
        item = next(plugin.discover())
        planned = [PlannedItem(item, plugin.plan_item(item))]
        started = time.perf_counter()
        result = next(plugin.purge(planned))
        written = time.perf_counter()
        evidence = next(plugin.verify(planned))
        verified = time.perf_counter()
    finally:
        plugin.close()
    if result.status != "purged" or not evidence.verified:
        raise SystemExit(f"Lethe run failed: {result.detail} {evidence.checks}")
    pass_seconds = result.facts["passes"][0]["seconds"]
    return written - started, pass_seconds, verified - written


def keystream_rate(size: int) -> float:
    """Return MiB/s of keystream generation alone, the CPU bound of a random pass."""
    keystream = Keystream()
    buffer = aligned_buffer()
    view = memoryview(buffer)
    started = time.perf_counter()
    for offset in range(0, size, CHUNK):
        keystream.fill(offset, view, CHUNK)
    seconds = time.perf_counter() - started
    release(view, buffer)
    return size / seconds / (1 << 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", default="2G", help="size of the loop device, e.g. 512M or 2G"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per tool; the median is reported"
    )
    parser.add_argument(
        "--nwipe-runs",
        type=int,
        default=1,
        help="runs of nwipe, which is far slower than the others (default: 1)",
    )
    parser.add_argument(
        "--dir", default=None, help="directory for the image (default: a temporary one)"
    )
    parser.add_argument(
        "--loop-direct-io",
        choices=("on", "off"),
        default="on",
        help="losetup --direct-io: 'on' sends the loop device's I/O to the disk under the "
        "image, 'off' serves it from the page cache (default: on)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_overwrite.WORKERS,
        help=f"I/O threads per pass and read-back (default: {_overwrite.WORKERS})",
    )
    args = parser.parse_args()
    _overwrite.WORKERS = args.workers
    if os.geteuid() != 0:
        parser.error("run as root: the benchmark attaches a loop device")
    size = parse_size(args.size)
    if size <= 0 or size % (4 << 20):
        parser.error(f"--size must be a positive multiple of 4 MiB, not {args.size}")
    blocks = size // (4 << 20)
    nwipe = shutil.which("nwipe")

    workdir = Path(tempfile.mkdtemp(prefix="lethe-bench-", dir=args.dir))
    image = workdir / "bench.img"
    with open(image, "wb") as handle:
        handle.truncate(size)
    device = subprocess.run(
        [
            "losetup",
            "--find",
            "--show",
            f"--direct-io={args.loop_direct_io}",
            str(image),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    times: dict[str, list[float]] = {
        "dd write": [],
        "lethe write": [],
        "lethe pass only": [],
        "nwipe zero": [],
        "dd read": [],
        "lethe read-back": [],
    }
    try:
        # An untimed pass allocates the sparse image, so no timed run pays for it.
        timed(
            [
                "dd",
                "if=/dev/zero",
                f"of={device}",
                "oflag=direct",
                "bs=4M",
                f"count={blocks}",
            ]
        )
        for _ in range(args.runs):
            # dd fails with ENOSPC at the end of a device, so it gets a count.
            times["dd write"].append(
                timed(
                    [
                        "dd",
                        "if=/dev/zero",
                        f"of={device}",
                        "oflag=direct",
                        "bs=4M",
                        f"count={blocks}",
                    ]
                )
            )
            # Each read follows its own tool's write, so both meet the disk in
            # the same state: the host may still be flushing what was written.
            times["dd read"].append(
                timed(
                    [
                        "dd",
                        f"if={device}",
                        "of=/dev/null",
                        "iflag=direct",
                        "bs=4M",
                        f"count={blocks}",
                    ]
                )
            )
            write, pass_only, read = lethe_pass(device)
            times["lethe write"].append(write)
            times["lethe pass only"].append(pass_only)
            times["lethe read-back"].append(read)
            if nwipe and len(times["nwipe zero"]) < args.nwipe_runs:
                times["nwipe zero"].append(
                    timed(
                        [
                            nwipe,
                            "--autonuke",
                            "--nogui",
                            "--method=zero",
                            "--verify=off",
                            "--noblank",
                            device,
                        ]
                    )
                )
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"device: loop device (direct-io={args.loop_direct_io}) over an image of "
        f"{size / (1 << 30):.2f} GiB; median of {args.runs} run(s); "
        f"{args.workers} I/O threads"
    )
    rates = {}
    for name, samples in times.items():
        if not samples:
            reason = "nwipe is not installed" if not nwipe else "--nwipe-runs 0"
            print(f"{name:16} not run ({reason})")
            continue
        seconds = statistics.median(samples)
        rates[name] = size / seconds / (1 << 20)
        print(f"{name:16} {seconds:7.2f} s  {rates[name]:8.1f} MiB/s")
    keystream = keystream_rate(min(size, 1 << 30))
    print(f"keystream alone  {keystream:8.1f} MiB/s (AES-128-CTR, one core)")
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f} on {os.cpu_count()} cores")
    # Each run's dd and Lethe figures come from the same minute, so the
    # median of the per-run ratios drifts less with the machine's load than
    # the ratio of the medians.
    comparisons = (
        (
            "lethe random write / dd zero write",
            "lethe write",
            "dd write",
            " (target >= 0.90)",
        ),
        ("lethe pass only / dd zero write", "lethe pass only", "dd write", ""),
        (
            "lethe read-back / dd direct read",
            "lethe read-back",
            "dd read",
            " (target >= 0.90)",
        ),
    )
    for label, lethe, anchor, target in comparisons:
        per_run = statistics.median(
            dd_time / lethe_time
            for dd_time, lethe_time in zip(times[anchor], times[lethe], strict=True)
        )
        print(
            f"{label + ':':36} {rates[lethe] / rates[anchor]:.2f} of the medians, "
            f"{per_run:.2f} median of per-run ratios{target}"
        )
    if "nwipe zero" in rates:
        print(
            f"lethe random write / nwipe zero:    {rates['lethe write'] / rates['nwipe zero']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
