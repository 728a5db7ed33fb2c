"""Messages of the real CLI: warnings, prefixes, plurals and JSON fields."""

from __future__ import annotations

import json
from pathlib import Path

from agent import engine
from tests.core.test_cli import latest_job


def test_empty_operator_warned(lethe, tree: Path) -> None:
    result = lethe("plan", f"testdir://{tree / 'sub'}")
    assert "lethe: warning: the certificate will leave operator.name" in result.stderr
    assert "operator.organization.name" in result.stderr


def test_usage_error_not_preceded_by_warning(lethe) -> None:
    for command in (["plan"], ["purge", "--yes"]):
        result = lethe(*command)
        assert result.returncode == 3, result.stderr
        assert "no targets given" in result.stderr
        assert "will leave" not in result.stderr


def test_purge_warns_operator_keys(lethe, tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "lethe.yaml"
    config.write_text("operator:\n  name: Test Operator\n")
    result = lethe("purge", "--yes", "-c", str(config), f"testdir://{tree / 'sub'}")
    assert result.returncode == 0, result.stderr
    assert "operator.name" not in result.stderr
    assert "operator.organization.name" in result.stderr
    assert f"set them in {config}" in result.stderr


def test_complete_operator_not_warned(lethe, tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "lethe.yaml"
    config.write_text(
        "operator:\n"
        "  name: Test Operator\n"
        "  title: Administrator\n"
        "  organization:\n"
        "    name: Test Org\n"
        "    address: 1 Test Street\n"
        "    contact: ops@example.com\n"
    )
    result = lethe("plan", "-c", str(config), f"testdir://{tree / 'sub'}")
    assert "warning" not in result.stderr


def test_option_before_command(lethe, tmp_path: Path) -> None:
    result = lethe("-c", str(tmp_path / "missing.yaml"), "plan", "/nowhere")
    assert result.returncode == 3
    assert "lethe: error: lethe" not in result.stderr
    assert "option -c must follow the command" in result.stderr


def test_usage_error_prefix_once(lethe) -> None:
    result = lethe("status", "--log-level", "LOUD")
    assert result.returncode == 3
    assert result.stderr.startswith("lethe: error: argument --log-level: invalid")
    assert result.stderr.count("lethe") == 2, result.stderr
    assert "see 'lethe status --help'" in result.stderr


def test_single_item_singular(lethe, tree: Path) -> None:
    result = lethe("plan", f"testdir://{tree / 'sub' / 'deeper'}")
    assert result.returncode == 0, result.stderr
    assert "would purge 1 item (" in result.stdout
    assert "1 items" not in result.stdout


def test_verify_json_names_certificate(lethe, tree: Path, state_dir: Path) -> None:
    purged = lethe("purge", "--yes", "--json", f"testdir://{tree / 'sub'}")
    certificate = json.loads(purged.stdout)["certificate"]
    job_id = latest_job(state_dir)
    result = lethe("verify", job_id, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["certificate"] == certificate
    assert f"certificate: {certificate}" in lethe("verify", job_id).stdout


def test_certificate_from_other_state_dir(
    lethe, tree: Path, state_dir: Path, tmp_path: Path
) -> None:
    lethe("purge", "--yes", f"testdir://{tree / 'sub'}")
    certificate = next((state_dir / "certificates").glob("*.json"))
    other = tmp_path / "other-state"
    second_tree = tmp_path / "second"
    second_tree.mkdir()
    (second_tree / "export.csv").write_text("another export\n")
    # The other state directory has an audit log and a key of its own.
    lethe("purge", "--yes", "--state-dir", str(other), f"testdir://{second_tree}")
    result = lethe("certificate", "verify", str(certificate), "--state-dir", str(other))
    assert result.returncode == 2
    assert "truncated" not in result.stdout
    assert "lines were removed" not in result.stdout
    assert "issued with another state directory" in result.stdout
    assert f"the key of the state directory {other}" in result.stdout


def _raise_internal_error(args):
    raise RuntimeError("boom")


def test_internal_error_in_plan_no_resume(monkeypatch, capsys):
    from agent import cli
    from agent.commands import plan

    monkeypatch.setattr(plan, "run", _raise_internal_error)
    code = cli.main(["plan", "/nonexistent-target"])
    stderr = capsys.readouterr().err

    assert code == 2
    assert "internal error: RuntimeError('boom')" in stderr
    assert "--resume" not in stderr
    assert "lethe plan destroys nothing" in stderr


def test_internal_error_in_purge_names_resume(monkeypatch, capsys):
    from agent import cli
    from agent.commands import purge

    monkeypatch.setattr(purge, "run", _raise_internal_error)
    monkeypatch.setattr(engine, "last_job_id", None)
    code = cli.main(["purge", "/nonexistent-target"])
    stderr = capsys.readouterr().err

    assert code == 2
    assert "lethe purge --resume JOB (lethe status lists the job)" in stderr


def test_internal_error_names_known_job(monkeypatch, capsys):
    from agent import cli
    from agent.commands import purge

    monkeypatch.setattr(purge, "run", _raise_internal_error)
    monkeypatch.setattr(engine, "last_job_id", "20261205T010203Z-abc123")
    code = cli.main(["purge", "/nonexistent-target"])
    stderr = capsys.readouterr().err

    assert code == 2
    assert "lethe purge --resume 20261205T010203Z-abc123" in stderr
