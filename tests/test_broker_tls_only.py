"""``otalab broker --tls``: TLS is the only way in unless a plain listener is asked for (issue 8, item 5).

An attacker who knows a deployer's user:password but has no client certificate must not be
able to connect, on any port the broker listens on, and publish retained firmware.
"""

from __future__ import annotations

import pytest
from broker_helpers import Probe
from process_helpers import listening_ports, otalab_process

from otalib.broker import BrokerUser, find_mosquitto
from otalib.errors import UsageError

BACKENDS = ["mosquitto", "embedded"]
USER = BrokerUser("deployer", "deploy-pw")
TOPIC = "a/test/u/4.3"


def _backend(backend: str) -> str:
    if backend == "mosquitto" and find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    return backend


def _plain_publish_works(port: int) -> bool:
    """True if user:password without TLS connects on ``port`` and a retained QoS 2 publish is acknowledged."""
    probe = Probe(f"mqtt://127.0.0.1:{port}", user=USER, tls=False)
    try:
        rc = probe.connect(timeout=5)
        if rc is None or rc.is_failure:
            return False
        return probe.publish(TOPIC, b"evil firmware", timeout=5).is_published()
    finally:
        probe.close()


def _broker_pid(process) -> int:
    children = process.children()
    assert len(children) == 1, f"expected one broker child, got {children}"
    return children[0].pid


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_with_client_certs_listens_on_tls_only(backend):
    with otalab_process(
        "broker", "--backend", _backend(backend), "--tls", "--require-client-cert", "--user", "deployer:deploy-pw"
    ) as broker:
        broker.wait_line("ready")
        tls_port = int(broker.field("url").rsplit(":", 1)[1])
        assert broker.field("plain url") is None, broker.lines
        ports = listening_ports(_broker_pid(broker))
        assert ports == {tls_port}, f"the broker listens on {ports}, TLS is {tls_port}"
        assert not any(_plain_publish_works(port) for port in ports)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_port_is_opened_only_when_asked_and_says_what_it_bypasses(backend):
    with otalab_process(
        "broker",
        "--backend",
        _backend(backend),
        "--tls",
        "--require-client-cert",
        "--user",
        "deployer:deploy-pw",
        "--plain-port",
        "0",
    ) as broker:
        broker.wait_line("ready")
        plain_url = broker.field("plain url")
        assert plain_url and plain_url.startswith("mqtt://127.0.0.1:")
        warning = broker.field("warning") or ""
        assert plain_url in warning and "bypasses the client-certificate requirement" in warning
        plain_port = int(plain_url.rsplit(":", 1)[1])
        tls_port = int(broker.field("url").rsplit(":", 1)[1])
        assert listening_ports(_broker_pid(broker)) == {tls_port, plain_port}
        assert _plain_publish_works(plain_port)  # what the warning says is true


def test_plain_port_without_tls_is_refused(tmp_path):
    with otalab_process("broker", "--plain-port", "0", cwd=tmp_path) as broker:
        assert broker.finish() == 2
    assert broker.lines == [
        "otalab: error: --plain-port needs --tls (without --tls the broker listens in plain on --port)"
    ]
    from otalib.broker import make_broker

    with pytest.raises(UsageError, match="needs tls"):
        make_broker("embedded", plain_port=0, workdir=tmp_path / "b")
