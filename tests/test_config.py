"""The lab configuration: framework variable names, file, environment, explicit options."""

from __future__ import annotations

import pytest

from otalib.config import load_config
from otalib.errors import ConfigError


def test_defaults_are_the_frameworks():
    config = load_config(path=None, env={})
    assert (config.APP_ID, config.ENABLE_OTA_VARINT_VERSION, config.ENABLE_OTA_SIGNING) == ("test", True, True)
    assert config.topic == "a/test/u/4.3"


def test_file_then_environment(tmp_path):
    file = tmp_path / "otalab.toml"
    file.write_text('APP_ID = "lamp"\nAPP_VERSION = "2.1"\nENABLE_OTA_ADVANCED = 1\nMQTT_URL = "mqtts://b:8883"\n')
    config = load_config(file, env={"APP_VERSION": "2.2", "ENABLE_SSL": "1", "APP_VERSION_PATCH": "7"})
    assert config.APP_ID == "lamp"
    assert config.APP_VERSION == "2.2" and config.APP_VERSION_PATCH == 7
    assert config.ENABLE_OTA_ADVANCED is True and config.ENABLE_SSL is True
    assert config.deploy_url() == "mqtts://b:8883/a/lamp/u/2.2"
    assert str(config.version) == "2.2.7"


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("NOPE = 1\n", {}, "unknown setting(s) in {file}: NOPE"),
        ("APP_ID = \n", {}, "bad configuration file {file}: Invalid value (at line 1, column 10)"),
        ("", {"ENABLE_SSL": "maybe"}, "bad ENABLE_SSL='maybe': expected 1 or 0"),
        ("", {"APP_VERSION_PATCH": "x"}, "bad APP_VERSION_PATCH='x': expected a whole number"),
        ("", {"APP_VERSION_PATCH": "-1"}, "bad APP_VERSION_PATCH='-1': must not be negative"),
        (
            "",
            {"APP_VERSION": "four"},
            "bad APP_VERSION='four' ({file}+env): bad version 'four': expected MAJOR.MINOR or MAJOR.MINOR.PATCH",
        ),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path, content, env, message):
    file = tmp_path / "otalab.toml"
    file.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config(file, env=env)
    assert type(err.value) is ConfigError and str(err.value) == message.format(file=file)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})
