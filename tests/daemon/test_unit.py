"""The systemd unit: offline verification and the exposure score."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "lethe.service"
MAX_EXPOSURE = 3.0


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    script = Path(sys.executable).parent / "lethe"
    lethe = str(script) if script.exists() else shutil.which("lethe")
    assert lethe, "the lethe console script is not installed in this environment"
    # verify checks that ExecStart exists, so point it at this installation.
    unit = tmp_path / "lethe.service"
    unit.write_text(UNIT.read_text().replace("/opt/lethe/bin/lethe", lethe))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_unit_exposure_at_most_three() -> None:
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(
        r"Overall exposure level for lethe\.service: ([0-9.]+)", result.stdout
    )
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_unit_hardening_settings() -> None:
    settings = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=60",
        "StateDirectory=lethe",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ):
        assert re.search(rf"^{re.escape(line)}$", settings, re.MULTILINE), line
    assert "CAP_SYS_RAWIO" not in re.search(
        r"^CapabilityBoundingSet=(.*)$", settings, re.MULTILINE
    ).group(1)
