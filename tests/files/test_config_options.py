"""Config options reach a command-line target written in another form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LETHE = Path(sys.executable).with_name("lethe")


@pytest.mark.parametrize("form", ["{root}/", "file://{root}", "{root}/sub/.."])
def test_config_options_match_canonical_target(tmp_path: Path, form: str) -> None:
    root = tmp_path / "exports"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.csv").write_text("name,phone\n")
    config = tmp_path / "lethe.yaml"
    config.write_text(
        "operator:\n  name: Test Operator\n"
        f"targets:\n  - url: {root}\n    options:\n      keep_root: true\n"
    )
    result = subprocess.run(
        [
            str(LETHE),
            "plan",
            "-c",
            str(config),
            "--state-dir",
            str(tmp_path / "state"),
            form.format(root=root),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    totals = json.loads(result.stdout)["totals"]
    # keep_root leaves the target directory itself out: the file and sub/.
    assert totals["items"] == 2
