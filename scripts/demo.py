"""Generate synthetic customer exports in ./demo, then plan, purge and certify them.

Runs as a normal user, without loop devices: the raw-device scan is off, so
verification checks that each file is gone and that the read-back of the
overwrite matched. Started as root, it runs Lethe as the user ``nobody``,
because as root Lethe also checkpoints and zeroes the ext4 journal of the
filesystem that contains ./demo, which is usually the system disk. Every name, phone number and ID number is made up (phone
numbers come from the +44 7700 900xxx range reserved for fiction).
"""

from __future__ import annotations

import csv
import grp
import os
import pwd
import random
import shutil
import subprocess
import sys
from pathlib import Path

DEMO = Path("demo").resolve()
EXPORTS = DEMO / "exports"
OUTSIDE = DEMO / "outside"
STATE = DEMO / "state"
MARKER = DEMO / ".lethe-demo"
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


def write_customers(path: Path, rows: int, generator: random.Random) -> None:
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
    write_customers(OUTSIDE / "contracts.csv", 20, generator)
    write_customers(OUTSIDE / "shared-ledger.csv", 20, generator)
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
        "  scan_device: false\n",
        encoding="utf-8",
    )


def give_to_nobody() -> dict[str, object]:
    """Hand ./demo to the user nobody when running as root; return subprocess options."""
    if os.geteuid() != 0:
        return {}
    user, group = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    privileges = {"user": user.pw_uid, "group": group.gr_gid, "extra_groups": []}
    try:
        probe = subprocess.run(
            [str(LETHE), "--version"], capture_output=True, check=False, **privileges
        )
        usable = probe.returncode == 0
    except PermissionError:
        usable = False
    if not usable:
        sys.exit(
            f"as root the demo runs Lethe as the user nobody, who cannot run {LETHE} "
            "(its Python lives in a directory only root can read); "
            "run make demo as a normal user instead"
        )
    for directory, subdirectories, files in os.walk(DEMO):
        os.chown(directory, user.pw_uid, group.gr_gid)
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            os.chown(path, user.pw_uid, group.gr_gid, follow_symlinks=False)
    print(
        "running Lethe as the user nobody (see the note at the top of scripts/demo.py)"
    )
    return privileges


def lethe(*args: str, privileges: dict[str, object]) -> int:
    command = [str(LETHE), *args, "-c", str(DEMO / "lethe.yaml")]
    print(f"\n$ lethe {' '.join(args)}", flush=True)
    environment = dict(os.environ, LETHE_STATE_DIR=str(STATE), HOME=str(DEMO))
    completed = subprocess.run(
        command, env=environment, stderr=subprocess.DEVNULL, check=False, **privileges
    )
    return completed.returncode


def main() -> int:
    reset()
    generate()
    print(f"generated synthetic customer exports in {EXPORTS}")
    STATE.mkdir()
    privileges = give_to_nobody()
    plan_code = lethe("plan", str(EXPORTS), privileges=privileges)
    if plan_code not in (0, 1):
        return plan_code
    purge_code = lethe("purge", "--yes", str(EXPORTS), privileges=privileges)
    if purge_code not in (0, 1):
        print(f"purge failed with exit code {purge_code}")
        return purge_code
    certificates = sorted((STATE / "certificates").glob("*.json"))
    if not certificates:
        print("no certificate was issued")
        return 2
    verify_code = lethe(
        "certificate", "verify", str(certificates[-1]), privileges=privileges
    )
    intact = (OUTSIDE / "contracts.csv").exists() and (
        OUTSIDE / "shared-ledger.csv"
    ).exists()
    print(f"\nfiles outside the target untouched: {intact}")
    print(f"certificate: {certificates[-1]}")
    print(f"certificate for people: {certificates[-1].with_suffix('.html')}")
    return verify_code if intact else 2


if __name__ == "__main__":
    sys.exit(main())
