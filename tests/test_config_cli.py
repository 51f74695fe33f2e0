"""The CLI reads the lab configuration (otalab.toml, environment); explicit arguments win."""

from __future__ import annotations

import json
from pathlib import Path

from process_helpers import run_otalab as otalab

VECTORS = Path(__file__).parent / "vectors"


def test_deploy_takes_url_and_topic_from_otalab_toml(tmp_path, broker):
    (tmp_path / "otalab.toml").write_text(f'APP_ID = "lamp"\nAPP_VERSION = "2.1"\nMQTT_URL = "{broker.url}"\n')
    package = str(VECTORS / "pack_5_varint.sdp")
    result = otalab("deploy", package, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["topic"] == "a/lamp/u/2.1"
    result = otalab("deploy", package, "--json", cwd=tmp_path, env={"APP_VERSION": "2.2"})
    assert json.loads(result.stdout)["topic"] == "a/lamp/u/2.2"  # the environment overrides the file
    explicit = f"{broker.url}/a/other/u/1.0"
    result = otalab("deploy", package, explicit, "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["topic"] == "a/other/u/1.0"  # an explicit URL wins
    assert otalab("deploy", "--clear", "--json", cwd=tmp_path).returncode == 0


def test_bad_configuration_is_one_line(tmp_path):
    (tmp_path / "otalab.toml").write_text("ENABLE_SSL = 7\n")
    result = otalab("pack", str(VECTORS / "signed.ota"), "x.sdp", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("otalab: error: bad ENABLE_SSL")
    assert not (tmp_path / "x.sdp").exists()
