"""The config loader: defaults, the documented example file, and clear errors."""

from pathlib import Path

import pytest

from oonibackend import config

ETC = Path(__file__).resolve().parents[2] / "etc" / "oonibackend.toml"


def test_example_config_documents_exactly_the_defaults():
    loaded = config.load(str(ETC))
    defaults = config.Config()
    defaults.data_dir, defaults.source = loaded.data_dir, loaded.source
    assert loaded == defaults


def test_relative_paths_resolve_under_data_dir(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    assert cfg.path(cfg.spool.dir) == tmp_path / "spool"
    assert cfg.path("/abs/file") == Path("/abs/file")


def test_unknown_key_is_an_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[server]\nprot = 1\n")
    with pytest.raises(config.ConfigError, match="unknown config key server.prot"):
        config.load(str(f))


def test_wrong_type_is_an_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = "80"\n')
    with pytest.raises(config.ConfigError, match="server.port must be int"):
        config.load(str(f))


def test_command_line_overrides_win(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[server]\nport = 1234\n")
    cfg = config.load(str(f), **{"server.port": 9999, "server.host": None})
    assert cfg.server.port == 9999 and cfg.server.host == "127.0.0.1"


def test_jwt_secret_is_generated_once(tmp_path):
    cfg = config.load(None, data_dir=str(tmp_path))
    first = cfg.jwt_secret()
    assert len(first) == 64 and cfg.jwt_secret() == first
