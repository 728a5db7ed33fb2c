"""Config loading: typed values and errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lethe.yaml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    loaded = config.load(Path(__file__).parents[2] / "config" / "lethe.yaml")
    assert loaded.operator.organization.name == "Example Ltd"
    assert loaded.settings.passes == 1
    assert loaded.targets[2].options["endpoint_url"] == "http://127.0.0.1:5000"


def test_defaults_without_file() -> None:
    loaded = config.load(None)
    assert loaded.settings.readback == "full"
    assert loaded.targets == ()


def test_wrong_type_names_file_line_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "operator:\n  name: Jo\nsettings:\n  final_zero: true\n  passes: many\n",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: settings.passes: expected an integer")
    assert "'many'" in message


def test_passes_below_one_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "settings:\n  passes: 0\n")
    with pytest.raises(
        ConfigError, match=r":2: settings.passes: expected an integer from 1 to 35"
    ):
        config.load(path)


def test_unknown_key_lists_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "settings:\n  pases: 2\n")
    with pytest.raises(
        ConfigError, match=r":2: settings.pases: unknown key; expected one of .*passes"
    ):
        config.load(path)


def test_unknown_section_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "state_dir: /tmp/x\nplugins: {}\n")
    with pytest.raises(ConfigError, match=r":2: plugins: unknown key"):
        config.load(path)


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "settings:\n  passes: 1\n   bad: [\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: invalid YAML"):
        config.load(path)


def test_duplicate_key_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "settings:\n  passes: 1\n  passes: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'passes'"):
        config.load(path)


def test_target_without_url(tmp_path: Path) -> None:
    path = write(tmp_path, "targets:\n  - /srv/a\n  - options: {x: 1}\n")
    with pytest.raises(
        ConfigError, match=r":3: targets\[1\].url: missing required key"
    ):
        config.load(path)


def test_readback_fraction(tmp_path: Path) -> None:
    assert (
        config.load(write(tmp_path, "settings:\n  readback: 0.25\n")).settings.readback
        == 0.25
    )


def test_readback_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, "settings:\n  readback: 2\n")
    with pytest.raises(
        ConfigError, match=r':2: settings.readback: expected "full" or a fraction'
    ):
        config.load(path)


def test_protected_path_must_be_absolute(tmp_path: Path) -> None:
    path = write(
        tmp_path, "settings:\n  protected_paths:\n    - /srv\n    - relative\n"
    )
    with pytest.raises(
        ConfigError,
        match=r":4: settings.protected_paths\[1\]: expected an absolute path",
    ):
        config.load(path)


def test_unreadable_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        config.load(tmp_path / "missing.yaml")


def test_registered_section_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "_VALIDATORS", {})
    monkeypatch.setattr(config, "SECTION_MODULES", {"daemon": "agent.no_such_module"})

    def validate(node: config.Node) -> dict:
        node = node.mapping({"interval"})
        return {"interval": node.integer("interval", 60, minimum=1)}

    config.register_section("daemon", validate)
    assert config.load(write(tmp_path, "daemon:\n  interval: 5\n")).sections[
        "daemon"
    ] == {"interval": 5}
    with pytest.raises(
        ConfigError, match=r":3: daemon.interval: expected an integer of at least 1"
    ):
        config.load(write(tmp_path, "daemon:\n\n  interval: 0\n"))


def test_section_without_validator_kept_raw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "_VALIDATORS", {})
    monkeypatch.setattr(config, "SECTION_MODULES", {"keystore": "agent.no_such_module"})
    loaded = config.load(write(tmp_path, "keystore:\n  path: /k\n"))
    assert loaded.sections["keystore"] == {"path": "/k"}


def test_passes_above_maximum_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lethe.yaml"
    path.write_text("settings:\n  passes: 1000000000\n")
    with pytest.raises(ConfigError, match="passes: expected an integer from 1 to 35"):
        config.load(path)
