"""Seal and unseal throughput of ``lethe`` against ``age`` in the same run.

Usage: python benchmarks/seal_throughput.py [SIZE_MIB] [--small SIZE_MIB]

Both tools read the same input file (warm in the page cache) and write a
file next to it; each step runs ``--rounds`` times and the fastest counts. ``lethe seal`` and ``lethe unseal`` fsync their output, so
each ``age`` run is followed by ``sync FILE`` to make its output durable
too. ``age`` uses an X25519 recipient: its per-file key exchange is one
operation per file, and the payload is ChaCha20-Poly1305 in 64 KiB chunks.
Peak memory is each process's maximum RSS as GNU time reports it; ``lethe seal`` is also run on a
small file to show its peak does not grow with the file size.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
LETHE = Path(sys.executable).with_name("lethe")
TIME = "/usr/bin/time"


def run(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run a command; return its wall time in seconds and its peak RSS in KiB.

    The peak comes from GNU time, because a child forked from this (large)
    Python process inherits its RSS high-water mark.
    """
    started = time.perf_counter()
    process = subprocess.run(
        [TIME, "-f", "%M", *command],
        check=False,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(
            f"{command[0]} failed ({process.returncode}): {process.stderr}"
        )
    return elapsed, int(process.stderr.strip().splitlines()[-1])


def make_input(path: Path, size: int) -> None:
    block = secrets.token_bytes(4 * MiB)
    with open(path, "wb") as stream:
        stream.writelines(
            block[: min(len(block), size - offset)]
            for offset in range(0, size, len(block))
        )
    with open(path, "rb") as stream:  # warm the page cache for both tools
        while stream.read(16 * MiB):
            pass


def remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "size",
        nargs="?",
        type=int,
        default=1024,
        help="input size in MiB (default 1024)",
    )
    parser.add_argument(
        "--small",
        type=int,
        default=64,
        help="size in MiB of the memory comparison run (default 64)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds to run; the fastest of each step counts (default 2)",
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="directory for the temporary files (default: system temp)",
    )
    args = parser.parse_args()
    for tool, package in (
        ("age", "age"),
        ("age-keygen", "age"),
        ("sync", "coreutils"),
        (TIME, "time"),
    ):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"{tool} is not installed; install the Debian package '{package}'"
            )

    with tempfile.TemporaryDirectory(
        prefix="lethe-seal-bench-", dir=args.dir
    ) as directory:
        work = Path(directory)
        env = dict(
            os.environ,
            LETHE_STATE_DIR=str(work / "state"),
            LETHE_KEK=secrets.token_hex(32),
        )
        identity = work / "age.key"
        subprocess.run(
            ["age-keygen", "-o", str(identity)], check=True, capture_output=True
        )
        recipient = subprocess.run(
            ["age-keygen", "-y", str(identity)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

        size = args.size * MiB
        plain = work / "input.bin"
        make_input(plain, size)

        results: dict[str, tuple[float, int]] = {}
        for _round in range(args.rounds):
            for name, measured in one_round(
                plain, work, identity, recipient, env
            ).items():
                if name not in results or measured[0] < results[name][0]:
                    results[name] = measured
        remove(plain)

        startup = min(run([str(LETHE), "--version"], env)[0] for _ in range(3))
        small = work / "small.bin"
        make_input(small, args.small * MiB)
        _elapsed, small_rss = run(
            [str(LETHE), "seal", str(small), "--subject", "bench"], env
        )

    print(f"input: {args.size} MiB, machine: {os.cpu_count()} CPUs")
    for name, (elapsed, rss) in results.items():
        print(
            f"{name:13s} {args.size / elapsed:8.1f} MiB/s  {elapsed:6.2f} s  peak RSS {rss / 1024:6.1f} MiB"
        )
    print(f"lethe start-up (lethe --version), included above: {startup:.2f} s")
    seal_ratio = results["age encrypt"][0] / results["lethe seal"][0]
    unseal_ratio = results["age decrypt"][0] / results["lethe unseal"][0]
    print(
        f"throughput ratio lethe/age: seal {seal_ratio:.2f}x, unseal {unseal_ratio:.2f}x (target >= 0.8x)"
    )
    print(
        f"lethe seal peak RSS: {results['lethe seal'][1] / 1024:.1f} MiB at {args.size} MiB, "
        f"{small_rss / 1024:.1f} MiB at {args.small} MiB"
    )


def one_round(
    plain: Path, work: Path, identity: Path, recipient: str, env: dict[str, str]
) -> dict[str, tuple[float, int]]:
    """Time each step once; return (seconds, peak RSS in KiB) per step."""
    sealed, unsealed = work / "input.bin.lethe", work / "lethe.out"
    encrypted, decrypted = work / "input.bin.age", work / "age.out"
    results = {}
    results["lethe seal"] = run(
        [str(LETHE), "seal", str(plain), "--subject", "bench"], env
    )
    started = time.perf_counter()
    run(["age", "-e", "-r", recipient, "-o", str(encrypted), str(plain)], env)
    run(["sync", str(encrypted)], env)
    results["age encrypt"] = (
        time.perf_counter() - started,
        _age_rss(recipient, plain, env),
    )
    results["lethe unseal"] = run(
        [str(LETHE), "unseal", str(sealed), "-o", str(unsealed)], env
    )
    started = time.perf_counter()
    _elapsed, age_rss = run(
        ["age", "-d", "-i", str(identity), "-o", str(decrypted), str(encrypted)], env
    )
    run(["sync", str(decrypted)], env)
    results["age decrypt"] = (time.perf_counter() - started, age_rss)
    if not filecmp.cmp(unsealed, plain, shallow=False):
        raise SystemExit("lethe unseal output differs from the input")
    remove(sealed, unsealed, encrypted, decrypted)
    return results


def _age_rss(recipient: str, plain: Path, env: dict[str, str]) -> int:
    """Measure age's peak RSS on a second run to /dev/null (the timed run includes sync)."""
    return run(["age", "-e", "-r", recipient, "-o", os.devnull, str(plain)], env)[1]


if __name__ == "__main__":
    main()
