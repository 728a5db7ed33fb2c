"""The daemon end to end: spooled jobs, schedules, notify, status, metrics, signals."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.daemon.rig import (
    LETHE,
    DaemonRig,
    NotifySocket,
    file_hashes,
    item_count,
    make_tree,
    wait_until,
)


def test_spooled_plan_runs_to_done(rig: DaemonRig) -> None:
    selected = make_tree(rig.target, 60)
    kept = make_tree(rig.keep, 10)
    plan = rig.plan(rig.target)
    rig.start()
    rig.wait_ready()
    submitted = rig.submit(plan)
    assert submitted.returncode == 0, submitted.stderr
    ended = rig.wait_for_event("job run ended")
    assert ended["state"] == "done"
    assert ended["exit_code"] == 0
    assert not [path for path in selected if path.exists()]
    assert file_hashes(list(kept)) == kept
    assert len(rig.spool_files("done")) == 1
    result = json.loads(
        next((rig.state / "spool" / "done").glob("*.result.json")).read_text()
    )
    assert result["state"] == "done"
    assert result["certificate"]
    assert rig.stop() == 0


def test_status_counts_jobs(rig: DaemonRig) -> None:
    tree = make_tree(rig.target, 20)
    plan = rig.plan(rig.target)
    rig.start()
    rig.wait_ready()
    rig.submit(plan)
    rig.wait_for_event("job run ended")
    wait_until(lambda: rig.status()["counts"]["finished"] == 1, 10, "finished count")
    status = rig.status()
    assert status["daemon"]["pid"] == rig.process.pid
    assert status["counts"]["running"] == 0
    assert status["counts"]["queued"] == 0
    assert status["counts"]["failed"] == 0
    assert status["jobs"]["finished"][0]["items"] == {"verified": item_count(tree)}
    assert rig.stop() == 0
    assert rig.status()["daemon"] is None


def test_notify_ready_status_watchdog(rig: DaemonRig) -> None:
    rig.start(WATCHDOG_USEC="200000")
    ready = rig.wait_ready()
    assert "STATUS" in ready
    rig.notify.wait_for("WATCHDOG", "1", timeout=5)
    time.sleep(0.5)
    pings = [m for m in rig.notify.drain() if m.get("WATCHDOG") == "1"]
    assert len(pings) >= 3
    assert rig.stop() == 0
    assert any(m.get("STOPPING") == "1" for m in rig.notify.drain())


def test_notify_abstract_socket(rig: DaemonRig) -> None:
    abstract = NotifySocket(f"@lethe-test-{rig.root.name}")
    rig.notify.close()
    rig.notify = abstract
    rig.start()
    ready = rig.wait_ready()
    assert ready["STATUS"].startswith("0 running")
    assert rig.stop() == 0


def test_status_message_follows_jobs(rig: DaemonRig) -> None:
    make_tree(rig.target, 10)
    plan = rig.plan(rig.target)
    rig.start()
    rig.wait_ready()
    rig.submit(plan)
    rig.notify.wait_for(
        "STATUS", "0 running, 0 queued, 1 finished, 0 failed, 0 rejected"
    )
    assert rig.stop() == 0


def test_schedule_fires_and_purges(rig: DaemonRig) -> None:
    scheduled = make_tree(rig.target, 15)
    rig.write_config(
        schedules=[
            {
                "name": "every-second",
                "cron": "* * * * * *",
                "targets": [str(rig.target)],
            }
        ]
    )
    rig.start()
    rig.wait_ready()
    ended = rig.wait_for_event("job run ended", work="schedule every-second")
    assert ended["state"] == "done"
    assert not [path for path in scheduled if path.exists()]
    assert rig.stop() == 0


def test_metrics_textfile(rig: DaemonRig) -> None:
    tree = make_tree(rig.target, 12)
    textfile = rig.root / "lethe.prom"
    rig.write_config(metrics={"textfile": str(textfile)})
    plan = rig.plan(rig.target)
    rig.start()
    rig.wait_ready()
    rig.submit(plan)
    rig.wait_for_event("job run ended")
    text = wait_until(
        lambda: textfile.exists() and textfile.read_text(), 10, "textfile"
    )
    count = item_count(tree)
    assert f"lethe_items_purged_total {count}.0" in text
    assert f'lethe_verifications_total{{result="passed"}} {count}.0' in text
    assert 'lethe_jobs_total{source="spool",state="done"} 1.0' in text
    assert "lethe_job_duration_seconds_count" in text
    assert rig.stop() == 0


def test_metrics_http_on_loopback(rig: DaemonRig) -> None:
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rig.write_config(metrics={"listen_port": port})
    rig.start()
    rig.wait_ready()
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=10
    ) as reply:
        body = reply.read().decode()
    assert "lethe_items_purged_total" in body
    listening = [
        line
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
    ]
    assert [line.split()[1].split(":")[0] for line in listening] == ["0100007F"]
    assert rig.stop() == 0


def test_sigterm_stops_after_item_in_flight(rig: DaemonRig) -> None:
    # More files than one purge batch (2048). The daemon waits for the stop
    # after its first batch, so the stop lands between batches on any machine.
    selected = make_tree(rig.target, 5000, dirs=100)
    plan = rig.plan(rig.target)
    rig.start(LETHE_PAUSE_AFTER_ITEMS="1")
    rig.wait_ready()
    rig.submit(plan)
    rig.wait_for_event("item state", state="purged")
    started = time.monotonic()
    assert rig.stop(timeout=30) == 0
    assert time.monotonic() - started < 30
    journal = sqlite3.connect(rig.state / "journal.sqlite")
    states = dict(journal.execute("SELECT state, COUNT(*) FROM items GROUP BY state"))
    job_state = journal.execute("SELECT state FROM jobs WHERE dry_run = 0").fetchone()[
        0
    ]
    journal.close()
    assert "purging" not in states
    assert states.get("planned", 0) > 0
    assert job_state == "interrupted"
    assert rig.wait_for_event("daemon stopped")
    # A restart resumes the job and finishes it.
    rig.start()
    rig.wait_ready()
    ended = rig.wait_for_event("job run ended", state="done")
    assert ended["work"].startswith(("resume", "spool"))
    assert not [path for path in selected if path.exists()]
    assert rig.stop() == 0


def test_sighup_reloads_config(rig: DaemonRig) -> None:
    rig.start()
    rig.wait_ready()
    rig.write_config(max_jobs=3)
    rig.process.send_signal(signal.SIGHUP)
    reloaded = rig.wait_for_event("config reloaded")
    assert reloaded["max_jobs"] == 3
    assert rig.stop() == 0


def test_sighup_keeps_old_config_when_invalid(rig: DaemonRig) -> None:
    selected = make_tree(rig.target, 10)
    rig.start()
    rig.wait_ready()
    rig.config.write_text("daemon:\n  max_jobs: many\n", encoding="utf-8")
    rig.process.send_signal(signal.SIGHUP)
    rejected = rig.wait_for_event("config reload rejected; keeping the previous config")
    assert "daemon.max_jobs: expected an integer" in rejected["error"]
    assert rig.process.poll() is None
    # The old config (with its allowed targets) still governs submitted plans.
    rig.write_config()
    plan = rig.plan(rig.target)
    rig.config.write_text("daemon: [broken\n", encoding="utf-8")
    rig.spool_write("20000101T000000000000Z-00000000.json", plan.read_bytes())
    ended = rig.wait_for_event("job run ended")
    assert ended["state"] == "done"
    assert not [path for path in selected if path.exists()]
    assert rig.stop() == 0


def test_overlapping_targets_run_one_at_a_time(rig: DaemonRig) -> None:
    make_tree(rig.target, 400, dirs=4)
    inner = rig.plan(rig.target / "d00", name="inner.json")
    outer = rig.plan(rig.target, name="outer.json")
    assert rig.submit(inner).returncode == 0
    assert rig.submit(outer).returncode == 0
    rig.start()
    rig.wait_ready()
    rig.wait_for_event("spooled plan rejected")
    assert rig.stop() == 0
    events = rig.events()
    starts = [e["timestamp"] for e in events if e.get("event") == "job starting"]
    ended = [e["timestamp"] for e in events if e.get("event") == "job run ended"]
    assert len(starts) == 2
    assert starts[1] >= ended[0]
    # The outer plan ran after the inner one destroyed d00, so its world changed.
    rejected = [e for e in events if e.get("event") == "spooled plan rejected"]
    assert rejected[0]["reason"].startswith("the world no longer matches the plan")


def test_start_resumes_killed_cli_purge(rig: DaemonRig) -> None:
    selected = make_tree(rig.target, 1500, dirs=30)
    purge_log = rig.root / "purge.log"
    with open(purge_log, "wb") as log:
        purge = subprocess.Popen(
            [*LETHE, "purge", "--yes", "-c", str(rig.config), str(rig.target)],
            stdout=log,
            stderr=log,
        )
    wait_until(
        lambda: purge_log.read_bytes().count(b'"state": "purged"') >= 50,
        120,
        "the command-line purge to destroy 50 items",
    )
    purge.kill()
    purge.wait(30)
    # The files plugin removes a whole batch (up to 2048 files) before it
    # records their results, so the files may all be gone already. The job
    # is unfinished all the same: it has no certificate yet.
    assert not list((rig.state / "certificates").glob("*.json"))
    rig.start()
    rig.wait_ready()
    ended = rig.wait_for_event("job run ended")
    assert ended["work"].startswith("resume ")
    assert ended["state"] == "done"
    assert not [path for path in selected if path.exists()]
    assert rig.stop() == 0


def test_done_job_settles_claimed_plan_after_cancelled_twin(rig: DaemonRig) -> None:
    # A kill can cancel a job that was still planning, and the next start
    # can run the same claimed plan to done in the same second. Ids made
    # in one second end in random characters, so the cancelled job's id
    # may sort after the done job's. The plan must then settle, not run
    # again against files it already destroyed.
    make_tree(rig.target, 20)
    plan = rig.plan(rig.target)
    rig.start()
    rig.wait_ready()
    rig.submit(plan)
    assert rig.wait_for_event("job run ended")["state"] == "done"
    assert rig.stop() == 0
    finished = rig.spool_files("done")
    done_plan = next(path for path in finished if not path.name.endswith(".result.json"))
    for path in finished:
        path.unlink()
    claimed = rig.state / "spool" / "claimed" / done_plan.name
    claimed.write_bytes(plan.read_bytes())
    journal = sqlite3.connect(rig.state / "journal.sqlite")
    with journal:
        done_id, created = journal.execute(
            "SELECT id, created FROM jobs WHERE state = 'done'"
        ).fetchone()
        journal.execute(
            "INSERT INTO jobs (rowid, id, created, updated, state, dry_run, settings,"
            " source_plan) VALUES (-1, ?, ?, ?, 'cancelled', 0, '{}', ?)",
            (done_id[:-6] + "zzzzzz", created, created, str(claimed)),
        )
    journal.close()

    rig.start()
    rig.wait_ready()
    wait_until(lambda: rig.spool_files("done"), 30, "the claimed plan to settle")
    assert rig.stop() == 0

    journal = sqlite3.connect(rig.state / "journal.sqlite")
    states = [row[0] for row in journal.execute("SELECT state FROM jobs WHERE dry_run = 0")]
    journal.close()
    assert sorted(states) == ["cancelled", "done"]
    assert not rig.spool_files("claimed")
