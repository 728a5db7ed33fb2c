"""Generate synthetic customer exports, then plan, purge, verify and certify them.

As root, the sample lives on a 64 MiB ext4 image attached to a loop device
under ./demo. Lethe then also scans the raw device for the purged data, and
the demo counts planted ID numbers in the raw image afterwards. As a normal user
(or where loop devices are unavailable) the sample lives in ./demo itself
and the raw-device scan is off; verification then checks that each file is
gone and that the read-back of the overwrite matched. Every name, phone
number and ID number is made up (phone numbers come from the +44 7700
900xxx range reserved for fiction).
"""

from __future__ import annotations

import csv
import contextlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

DEMO = Path("demo").resolve()
STATE = DEMO / "state"
MARKER = DEMO / ".lethe-demo"
IMAGE = DEMO / "disk.img"
DISK = DEMO / "disk"
# main() moves these onto the loop-device image when it runs as root.
EXPORTS = DEMO / "exports"
OUTSIDE = DEMO / "outside"
#: National ID numbers written into the target tree and outside it.
PLANTED: dict[str, list[str]] = {"inside": [], "outside": []}
LETHE = Path(sys.executable).with_name("lethe")

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Tim",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Berners",
]


def reset() -> None:
    """Remove a previous demo run; only a directory this script created is removed."""
    if DEMO.exists() and not MARKER.exists():
        sys.exit(f"{DEMO} exists but was not created by this demo; move it away first")
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    MARKER.touch()


def write_customers(
    path: Path, rows: int, generator: random.Random, inside: bool = True
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["customer_id", "name", "phone", "national_id", "balance"])
        for _ in range(rows):
            name = f"{generator.choice(FIRST)} {generator.choice(LAST)}"
            phone = f"+44 7700 900{generator.randrange(1000):03d}"
            national_id = (
                f"QX{generator.randrange(10**6):06d}{generator.choice('ABCD')}"
            )
            PLANTED["inside" if inside else "outside"].append(national_id)
            writer.writerow(
                [
                    generator.randrange(10**8),
                    name,
                    phone,
                    national_id,
                    generator.randrange(10**5),
                ]
            )


def generate() -> None:
    generator = random.Random(2026)
    write_customers(EXPORTS / "2019" / "q1" / "customers.csv", 200, generator)
    write_customers(EXPORTS / "2019" / "q2" / "customers.csv", 200, generator)
    write_customers(
        EXPORTS / "2019" / "q2" / "archive" / "closed-accounts.csv", 50, generator
    )
    write_customers(EXPORTS / "2020" / "customers.csv", 500, generator)
    write_customers(OUTSIDE / "contracts.csv", 20, generator, inside=False)
    write_customers(OUTSIDE / "shared-ledger.csv", 20, generator, inside=False)
    # A symlink that leads out of the tree: the link may go, its target stays.
    (EXPORTS / "latest-contracts.csv").symlink_to(OUTSIDE / "contracts.csv")
    # A hard link whose other name is outside the tree: refused.
    os.link(OUTSIDE / "shared-ledger.csv", EXPORTS / "2020" / "ledger.csv")
    (DEMO / "lethe.yaml").write_text(
        "operator:\n"
        "  name: Demo Operator\n"
        "  title: Systems administrator\n"
        "  organization:\n"
        "    name: Example Exports Ltd\n"
        "    address: 1 Example Street\n"
        "    contact: security@example.com\n"
        f"state_dir: {STATE}\n"
        "settings:\n"
        f"  scan_device: {'true' if DISK.is_mount() else 'false'}\n",
        encoding="utf-8",
    )


@contextlib.contextmanager
def sample_disk():
    """Mount a fresh ext4 image on a loop device at ./demo/disk when root.

    Yields True when the image is mounted. Detaches on exit and keeps the
    image file, so the raw bytes can be inspected afterwards.
    """
    if (
        os.geteuid() != 0
        or not shutil.which("losetup")
        or not shutil.which("mkfs.ext4")
    ):
        yield False
        return
    with open(IMAGE, "wb") as image:
        image.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(IMAGE)], check=True)
    attach = subprocess.run(
        ["losetup", "--find", "--show", str(IMAGE)], capture_output=True, text=True
    )
    if attach.returncode != 0:
        print(f"loop devices unavailable ({attach.stderr.strip()}); using ./demo")
        yield False
        return
    device = attach.stdout.strip()
    DISK.mkdir()
    try:
        subprocess.run(["mount", device, str(DISK)], check=True)
        try:
            yield True
        finally:
            if os.path.ismount(DISK):  # main() unmounts before reading the image
                subprocess.run(["umount", str(DISK)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def count_in_image(values: list[str]) -> int:
    """Count how many of ``values`` occur anywhere in the raw image."""
    os.sync()
    raw = IMAGE.read_bytes()
    return sum(1 for value in values if value.encode() in raw)


def lethe(*args: str) -> int:
    command = [str(LETHE), *args, "-c", str(DEMO / "lethe.yaml")]
    config = os.path.relpath(DEMO / "lethe.yaml")
    print(f"\n$ lethe {' '.join(args)} -c {config}", flush=True)
    environment = dict(os.environ, LETHE_STATE_DIR=str(STATE), HOME=str(DEMO))
    completed = subprocess.run(
        command, env=environment, stderr=subprocess.DEVNULL, check=False
    )
    return completed.returncode


def main() -> int:
    global EXPORTS, OUTSIDE
    reset()
    STATE.mkdir(mode=0o700)
    with sample_disk() as on_disk:
        if on_disk:
            EXPORTS, OUTSIDE = DISK / "exports", DISK / "outside"
        generate()
        where = f"on an ext4 image at {IMAGE}" if on_disk else f"in {DEMO}"
        print(f"generated synthetic customer exports {where}")
        code = run_job()
        if on_disk and code in (0, 1):
            subprocess.run(["umount", str(DISK)], check=True)
            remaining = count_in_image(PLANTED["inside"])
            outside_left = count_in_image(PLANTED["outside"])
            print(
                f"raw image: {remaining} of {len(PLANTED['inside'])} purged ID numbers "
                f"found; {outside_left} of {len(PLANTED['outside'])} ID numbers of the files "
                "outside the target are still there, as they should be"
            )
            if remaining:
                code = 2
    return code


def run_job() -> int:
    plan_code = lethe("plan", str(EXPORTS))
    if plan_code not in (0, 1):
        return plan_code
    purge_code = lethe("purge", "--yes", str(EXPORTS))
    if purge_code not in (0, 1):
        print(f"purge failed with exit code {purge_code}")
        return purge_code
    certificates = sorted((STATE / "certificates").glob("*.json"))
    if not certificates:
        print("no certificate was issued")
        return 2
    verify_code = lethe("certificate", "verify", str(certificates[-1]))
    intact = (OUTSIDE / "contracts.csv").exists() and (
        OUTSIDE / "shared-ledger.csv"
    ).exists()
    print(f"\nfiles outside the target untouched: {intact}")
    print(f"certificate: {certificates[-1]}")
    print(f"certificate for people: {certificates[-1].with_suffix('.html')}")
    return verify_code if intact else 2


if __name__ == "__main__":
    sys.exit(main())
