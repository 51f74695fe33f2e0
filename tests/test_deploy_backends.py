"""`otalab deploy` against BOTH broker backends: early and late subscribers get the exact bytes; --clear removes it."""

from __future__ import annotations

import subprocess
import sys

import broker_helpers
import pytest

from otalib.firmware.demo import make_demo_image
from otalib.formats.package import pack
from otalib.mqtt.publish import deploy

TOPIC = "a/test/u/4.3"
lab_broker = broker_helpers.lab_broker
probes = broker_helpers.probes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["mosquitto", "embedded"])
@pytest.mark.parametrize("size", [256 * 1024, 4 * 1024 * 1024], ids=["256K", "4M"])
def test_deploy_reaches_early_and_late_subscribers_then_clear_removes_it(lab_broker, probes, backend, size, tmp_path):
    broker = lab_broker(backend)
    package = pack(make_demo_image("esp32", "test", "4.3.2", size=size), 2)
    early = probes(broker).connect_ok()
    early.subscribe(TOPIC)
    url = f"{broker.url}/{TOPIC}"
    mqtt_version = "3.1.1" if backend == "embedded" else "auto"
    record = deploy(package, url, timeout=60, mqtt_version=mqtt_version)
    assert record.bytes == len(package) and record.retain and record.qos == 2
    assert 0 <= record.publish_start <= record.pubcomp_s
    got = early.get(timeout=30)
    assert got is not None and got.payload == package
    late = probes(broker).connect_ok()
    late.subscribe(TOPIC, qos=0)  # as a device subscribes
    got = late.get(timeout=30)
    assert got is not None and got.payload == package and got.retain
    cleared = subprocess.run(
        [sys.executable, "-m", "otalib", "deploy", "--clear", url, "--mqtt-version", mqtt_version],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cleared.returncode == 0, cleared.stderr
    after = probes(broker).connect_ok()
    after.subscribe(TOPIC)
    assert after.settle() == []  # nothing retained any more
