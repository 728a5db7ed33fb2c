"""Benchmark personal-data discovery against ``grep -P -c`` on the same CSV.

Generates a CSV export of synthetic customers (each row holds a resident
identity number, a mobile number, an e-mail address and, in every fourth
row, a bank card and a credit code, next to names, amounts, dates and free
text), then times in the same run, on the same file from the page cache:

- Lethe's discovery (``agent.policy.discovery.discover_file``), which finds
  every candidate, validates dates, check characters and Luhn sums and
  counts every value, once with one thread and once with two;
- ``grep -P -c`` with Lethe's own candidate pattern
  (``agent.policy.detectors._CANDIDATES``), which counts matching lines,
  stops at the first match of each line and validates nothing;
- ``grep -P -o ... | wc -l``, which at least lists every candidate.

grep runs with ``LC_ALL=C``, its fastest mode on bytes, and is
single-threaded, so the one-thread ratio is the like-for-like one. Each
command runs ``--repeat`` times and the fastest run counts. Lethe is timed
inside one process after a warm-up scan, so the figures leave out its
start-up (importing numba and loading the compiled loop from its cache),
which the script prints apart. Usage:

    python benchmarks/discovery.py [--size 1G] [--dir /tmp] [--keep] [--csv FILE]

``--keep`` keeps the CSV and its planted counts (``FILE.planted.json``), so
``--csv FILE`` can time the same file again without generating it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.policy.detectors import _CANDIDATES, Scanner
from agent.policy.discovery import discover_file

GREP_PATTERN = _CANDIDATES.pattern.decode("ascii")

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
AREAS = ["110101", "110105", "310104", "440305", "510107", "650102", "320102", "420106"]
WORDS = [
    "order",
    "shipped",
    "refund",
    "invoice",
    "paid",
    "pending",
    "delivery",
    "address",
    "updated",
    "note",
    "customer",
]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def ric(rng: random.Random) -> str:
    born = date.fromordinal(date(1950, 1, 1).toordinal() + rng.randrange(60 * 365))
    body = f"{rng.choice(AREAS)}{born:%Y%m%d}{rng.randrange(1000):03d}"
    total = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(body))
    check = (12 - total % 11) % 11
    return body + ("X" if check == 10 else str(check))


def uscc(rng: random.Random) -> str:
    body = (
        "91" + rng.choice(AREAS) + "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    )
    total = sum(USCC_ALPHABET.index(c) * pow(3, i, 31) for i, c in enumerate(body))
    return body + USCC_ALPHABET[(31 - total % 31) % 31]


def card(rng: random.Random) -> str:
    body = rng.choice(["4", "51", "62"]) + "".join(
        rng.choice("0123456789") for _ in range(13)
    )
    for check in "0123456789":
        number = body + check
        total = 0
        for index, digit in enumerate(reversed(number)):
            value = int(digit) * (2 if index % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return number
    raise AssertionError("unreachable")


def generate(path: Path, size: int) -> dict[str, int]:
    """Write the CSV; return the planted count per kind."""
    rng = random.Random(2026)
    planted = {"cn-ric": 0, "cn-mobile": 0, "email": 0, "bank-card": 0, "cn-uscc": 0}
    written = 0
    row = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write(
            "id,name,phone,id_number,email,card,company_code,amount,created,note\n"
        )
        while written < size:
            lines = []
            for _ in range(2000):
                row += 1
                extra = row % 4 == 0
                line = (
                    f"{row},Customer {row},1{rng.choice('3456789')}{rng.randrange(10**9):09d},"
                    f"{ric(rng)},user{row}@mail{row % 97}.example.cn,"
                    f"{card(rng) if extra else ''},{uscc(rng) if extra else ''},"
                    f"{rng.randrange(10**7) / 100:.2f},2025-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d},"
                    f"{' '.join(rng.choice(WORDS) for _ in range(6))} #{rng.randrange(10**6)}\n"
                )
                lines.append(line)
                planted["cn-ric"] += 1
                planted["cn-mobile"] += 1
                planted["email"] += 1
                planted["bank-card"] += extra
                planted["cn-uscc"] += extra
            block = "".join(lines)
            out.write(block)
            written += len(block.encode("utf-8"))
    return planted


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str] | str, shell: bool = False) -> tuple[float, float, str]:
    """Run a command; return its wall-clock seconds, CPU seconds and output."""
    start, cpu = time.perf_counter(), children_cpu()
    result = subprocess.run(
        command,
        shell=shell,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 1):
        raise SystemExit(f"{command!r} failed: {result.stderr.strip()}")
    return elapsed, children_cpu() - cpu, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", default="1G", help="CSV size, e.g. 256M or 1G (default 1G)"
    )
    parser.add_argument(
        "--dir", default=tempfile.gettempdir(), help="folder for the CSV"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV")
    parser.add_argument("--csv", help="time this CSV, kept by an earlier --keep run")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per command; the fastest counts"
    )
    args = parser.parse_args()
    grep = shutil.which("grep")
    if grep is None:
        raise SystemExit("grep is not installed")

    if args.csv:
        path = Path(args.csv)
        folder = path.parent
        planted = json.loads(Path(f"{path}.planted.json").read_text())
        args.keep = True
    else:
        folder = Path(tempfile.mkdtemp(prefix="lethe-discovery-", dir=args.dir))
        path = folder / "customers.csv"
        print(f"generating {args.size} of CSV in {path} ...", flush=True)
        planted = generate(path, parse_size(args.size))
        Path(f"{path}.planted.json").write_text(json.dumps(planted))
    try:
        size = path.stat().st_size
        subprocess.run(
            ["cat", str(path)], stdout=subprocess.DEVNULL, check=True
        )  # warm the cache

        started = time.perf_counter()
        scanner = Scanner()
        scanner.compiled_scanner()  # import numba
        discover_file(path, scanner, max_bytes=1 << 20)  # compile or load the loop
        startup = time.perf_counter() - started

        grep_runs = [
            timed([grep, "-P", "-c", GREP_PATTERN, str(path)])
            for _ in range(args.repeat)
        ]
        grep_seconds, grep_cpu, grep_lines = min(grep_runs)
        lethe = {}
        for workers in (1, 2):
            runs = []
            for _ in range(args.repeat):
                start, cpu = time.perf_counter(), time.process_time()
                findings = discover_file(path, scanner, max_bytes=None, workers=workers)
                runs.append((time.perf_counter() - start, time.process_time() - cpu))
            lethe[workers] = (min(runs), findings)
        all_seconds, _, all_count = timed(
            f"{grep} -P -o '{GREP_PATTERN}' {path} | wc -l", shell=True
        )

        mib = size / (1 << 20)
        print(
            f"file: {mib:.0f} MiB, {planted['cn-ric']} rows; machine: "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
        )
        print(f"planted: {planted}")
        for workers, (_, findings) in lethe.items():
            found = dict(sorted(findings.counts.items()))
            exact = found == dict(sorted(planted.items()))
            print(f"found, {workers} thread(s): {found} (exactly the planted: {exact})")
        print(f"lethe start-up (import, load or compile the loop): {startup:.1f} s")
        for workers, ((seconds, cpu), _) in lethe.items():
            print(
                f"lethe, {workers} thread(s): {seconds:6.2f} s "
                f"{mib / seconds:7.1f} MiB/s, CPU {cpu:.2f} s; "
                f"ratio to grep -P -c {grep_seconds / seconds:.2f} (target 0.5)"
            )
        print(
            f"grep -P -c      : {grep_seconds:6.2f} s {mib / grep_seconds:7.1f} MiB/s, "
            f"CPU {grep_cpu:.2f} s ({grep_lines} matching lines)"
        )
        print(
            f"grep -P -o | wc : {all_seconds:6.2f} s {mib / all_seconds:7.1f} MiB/s "
            f"({all_count} candidates)"
        )
    finally:
        if args.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
