"""Plan hashes, summaries and saved plans."""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent import plan
from agent.config import Config
from agent.engine import Engine
from agent.registry import Registry
from plugins.base import Target
from tests.core.dirplugin import DirPlugin


def make_engine(state_dir: Path) -> Engine:
    registry = Registry()
    registry.add(DirPlugin)
    return Engine(Config(), state_dir, registry=registry)


def plan_hash_of(engine: Engine, tree: Path, settings: dict | None = None) -> str:
    job_id = engine.plan([Target(f"testdir://{tree}")], settings or {}, dry_run=True)
    return engine.journal.job(job_id).plan_hash


def test_hash_stable_for_same_world(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    assert plan_hash_of(engine, tree) == plan_hash_of(engine, tree)


def test_hash_changes_with_size(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    before = plan_hash_of(engine, tree)
    with open(tree / "sub" / "export-0.csv", "a") as stream:
        stream.write("one more row\n")
    assert plan_hash_of(engine, tree) != before


def test_hash_changes_with_settings(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    assert plan_hash_of(engine, tree, {"passes": 1}) != plan_hash_of(
        engine, tree, {"passes": 3}
    )


def test_hash_ignores_fingerprints(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    path = tree / "sub" / "export-0.csv"
    before = plan_hash_of(engine, tree)
    status = path.stat()
    content = path.read_bytes()
    path.write_bytes(content.upper())  # same size, new fingerprints
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert plan_hash_of(engine, tree) == before


def test_summary_groups_refusals(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([Target(f"testdir://{tree}")], {}, dry_run=True)
    summary = engine.journal.job(job_id).summary
    reasons = {
        group["reason"]: group["items"] for group in summary["targets"][0]["refused"]
    }
    assert reasons == {"hold": 1, "symlink": 1}
    assert summary["totals"]["permitted"] == 4
    assert summary["targets"][0]["methods"][0]["category"] == "Clear"


def test_saved_plan_compares_clean(state_dir: Path, tree: Path, tmp_path: Path) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([Target(f"testdir://{tree}")], {}, dry_run=True)
    plan.write_plan_file(tmp_path / "plan.json", engine.journal, job_id, {})
    saved = plan.read_plan_file(str(tmp_path / "plan.json"))
    again = engine.plan(saved.targets, saved.settings, dry_run=False)
    assert list(plan.compare(saved, engine.journal, again)) == []
    assert engine.journal.job(again).plan_hash == saved.plan_hash


def test_saved_plan_reports_each_change(
    state_dir: Path, tree: Path, tmp_path: Path
) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([Target(f"testdir://{tree}")], {}, dry_run=True)
    plan.write_plan_file(tmp_path / "plan.json", engine.journal, job_id, {})
    (tree / "sub" / "export-0.csv").unlink()
    (tree / "sub" / "new.csv").write_text("a late export\n")
    with open(tree / "sub" / "export-1.csv", "a") as stream:
        stream.write("grown\n")
    saved = plan.read_plan_file(str(tmp_path / "plan.json"))
    again = engine.plan(saved.targets, saved.settings, dry_run=False)
    changes = {
        (d["change"], Path(d["item"]).name)
        for d in plan.compare(saved, engine.journal, again)
    }
    assert changes == {
        ("missing", "export-0.csv"),
        ("new", "new.csv"),
        ("changed", "export-1.csv"),
    }


def test_plan_file_is_json_without_fingerprints(
    state_dir: Path, tree: Path, tmp_path: Path
) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([Target(f"testdir://{tree}")], {}, dry_run=True)
    plan.write_plan_file(tmp_path / "plan.json", engine.journal, job_id, {})
    text = (tmp_path / "plan.json").read_text()
    document = json.loads(text)
    assert len(document["items"]) == 6
    assert "Ada Lovelace" not in text


def test_edited_plan_hash_reported(state_dir: Path, tree: Path, tmp_path: Path) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([Target(f"testdir://{tree}")], {}, dry_run=True)
    plan.write_plan_file(tmp_path / "plan.json", engine.journal, job_id, {})
    saved = plan.read_plan_file(str(tmp_path / "plan.json"))
    saved.plan_hash = "0" * 64
    again = engine.plan(saved.targets, saved.settings, dry_run=False)
    fields = [d["fields"] for d in plan.compare(saved, engine.journal, again)]
    assert fields == [["plan_hash"]]
