"""End to end through the installed ``lethe`` command on an s3:// target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.s3.conftest import all_entries

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(sys.executable).with_name("lethe")


def run_lethe(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, LETHE_STATE_DIR=str(state_dir), PYTHONPATH=str(REPO))
    return subprocess.run(
        [str(LETHE), *args],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        cwd=REPO,
    )


def write_config(tmp_path: Path, url: str, options: dict) -> Path:
    config = tmp_path / "lethe.yaml"
    config.write_text(
        "targets:\n"
        f"  - url: {json.dumps(url)}\n"
        "    options:\n"
        + "".join(
            f"      {key}: {json.dumps(value)}\n" for key, value in options.items()
        )
    )
    return config


def test_cli_plan_then_purge(s3, make_bucket, moto_endpoint, tmp_path):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="cust/a.csv", Body=b"Ada,+44 7700 900001")
    s3.put_object(Bucket=bucket, Key="cust/a.csv", Body=b"Ada,+44 7700 900002")
    s3.delete_object(Bucket=bucket, Key="cust/a.csv")
    s3.put_object(Bucket=bucket, Key="keep/b.csv", Body=b"kept")
    url = f"s3://{bucket}/cust/"
    config = write_config(tmp_path, url, {"endpoint_url": moto_endpoint})
    state_dir = tmp_path / "state"

    plan = run_lethe(state_dir, "plan", url, "-c", str(config), "--json")

    assert plan.returncode == 0, plan.stderr
    assert len(all_entries(s3, bucket, "cust/")) == 3

    purge = run_lethe(state_dir, "purge", url, "-c", str(config), "--yes")

    assert purge.returncode == 0, purge.stderr
    assert all_entries(s3, bucket, "cust/") == []
    assert [key for _, key, _ in all_entries(s3, bucket)] == ["keep/b.csv"]
    certificate = next((state_dir / "certificates").glob("*.json"))
    checked = run_lethe(state_dir, "certificate", "verify", str(certificate))
    assert checked.returncode == 0, checked.stderr
    rescan = run_lethe(state_dir, "verify", certificate.stem, "-c", str(config))
    assert rescan.returncode == 0, rescan.stdout + rescan.stderr


def test_cli_object_lock_exits_one(s3, make_bucket, moto_endpoint, tmp_path):
    bucket = make_bucket(versioning=None, object_lock=True)
    s3.put_object(Bucket=bucket, Key="l/free", Body=b"x")
    s3.put_object(
        Bucket=bucket, Key="l/held", Body=b"x", ObjectLockLegalHoldStatus="ON"
    )
    url = f"s3://{bucket}/l/"
    config = write_config(tmp_path, url, {"endpoint_url": moto_endpoint})

    purge = run_lethe(tmp_path / "state", "purge", url, "-c", str(config), "--yes")

    assert purge.returncode == 1, purge.stderr
    assert [key for _, key, _ in all_entries(s3, bucket)] == ["l/held"]


def test_cli_missing_bucket_exits_three(moto_endpoint, tmp_path):
    url = "s3://no-such-bucket-cli/p/"
    config = write_config(tmp_path, url, {"endpoint_url": moto_endpoint})

    plan = run_lethe(tmp_path / "state", "plan", url, "-c", str(config))

    assert plan.returncode == 3, plan.stderr
    assert "no-such-bucket-cli" in plan.stderr + plan.stdout
