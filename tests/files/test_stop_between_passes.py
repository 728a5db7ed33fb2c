"""A stop between overwrite passes, through the engine on a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.commands.certificate import _method_lines
from agent.config import Config
from agent.engine import Engine
from plugins._files.overwrite import FileOverwrite
from plugins.base import Target


def test_stop_after_first_pass_certifies_passes_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "exports"
    root.mkdir()
    for index in range(3):
        (root / f"customer-{index}.csv").write_bytes(b"Ada Lovelace\n" * 1000)
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    engine = Engine(Config(), state_dir)
    settings = {"passes": 3, "scan_device": False}
    job_id = engine.plan([Target(str(root))], settings, dry_run=False)

    # The stop arrives while the first pass is written, as SIGTERM would.
    write_pass = FileOverwrite.write_pass

    def write_then_stop(self, *args, **kwargs):
        write_pass(self, *args, **kwargs)
        engine.request_stop()

    monkeypatch.setattr(FileOverwrite, "write_pass", write_then_stop)
    stopped = engine.purge(job_id)
    assert stopped.state == "interrupted"
    engine.close()
    monkeypatch.setattr(FileOverwrite, "write_pass", write_pass)

    resumed = Engine(Config(), state_dir).resume(job_id)
    assert resumed.state == "done"
    # Three files and their directory.
    assert resumed.counts == {"verified": 4}
    assert resumed.certificate is not None
    document = json.loads(resumed.certificate.read_text())
    [overwrite] = [
        entry
        for entry in document["sanitization"]["methods"]
        if "passes" in entry["details"]
    ]
    assert overwrite["details"]["passes"] == 3
    assert overwrite["items_with_fewer_passes"] == 3
    assert overwrite["fewest_passes_done"] == 1
    shown = _method_lines(document["sanitization"]["methods"])
    assert shown == [
        "clear-overwrite (Clear): 4 items, 39000 bytes; "
        "3 items stopped early, after as few as 1 pass"
    ]
