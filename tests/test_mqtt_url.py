"""Deploy URL parsing: forms, defaults, percent-decoding, bad URLs."""

from __future__ import annotations

import pytest

from otalib.errors import UsageError
from otalib.mqtt.url import MqttUrl, parse_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://user:pass@host/a/test/u/4.3", MqttUrl("mqtt", "host", 1883, "user", "pass", "a/test/u/4.3")),
        ("mqtts://user:pass@host/a/test/u/4.3", MqttUrl("mqtts", "host", 8883, "user", "pass", "a/test/u/4.3")),
        ("mqtt://host:1884/a/test/u/4.3/s", MqttUrl("mqtt", "host", 1884, None, None, "a/test/u/4.3/s")),
        ("mqtts://u:p@10.0.0.5:9999/a/test/u/4.3/u/", MqttUrl("mqtts", "10.0.0.5", 9999, "u", "p", "a/test/u/4.3/u")),
        ("MQTT://Host.Example/a/x/u/1.0", MqttUrl("mqtt", "host.example", 1883, None, None, "a/x/u/1.0")),
        ("mqtt://user@host//a/test/u/4.3//", MqttUrl("mqtt", "host", 1883, "user", None, "a/test/u/4.3")),
        ("mqtt://host", MqttUrl("mqtt", "host", 1883, None, None, None)),
        ("mqtt://host:1883/", MqttUrl("mqtt", "host", 1883, None, None, None)),
        ("mqtt://[::1]:1884/a/t/u/1.2", MqttUrl("mqtt", "::1", 1884, None, None, "a/t/u/1.2")),
        ("mqtt://u:@host/a", MqttUrl("mqtt", "host", 1883, "u", "", "a")),
    ],
)
def test_forms_and_defaults(url: str, expected: MqttUrl) -> None:
    assert parse_url(url) == expected


def test_percent_decoding_of_credentials() -> None:
    parsed = parse_url("mqtt://us%40er:p%3As%2Fs%40w%20rd%25@host/a/test/u/4.3")
    assert parsed.username == "us@er"
    assert parsed.password == "p:s/s@w rd%"
    assert parsed.tls is False
    assert parse_url("mqtts://h/a").tls is True


def test_without_credentials_drops_the_password_only() -> None:
    parsed = parse_url("mqtts://dep:s3cr%3At@broker.lan/a/test/u/4.3")
    text = parsed.without_credentials()
    assert text == "mqtts://dep@broker.lan:8883/a/test/u/4.3"
    assert "s3cr" not in text and "s3cr" not in str(parsed)
    assert parse_url(parsed.with_credentials()) == parsed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("host/a/test", "not an MQTT URL"),
        ("http://host/a/test", "unsupported URL scheme"),
        ("ws://host/a", "unsupported URL scheme"),
        ("mqtt:///a/test/u/4.3", "no host"),
        ("mqtt://host:99999/a", "bad broker URL"),
        ("mqtt://host:abc/a", "bad broker URL"),
        ("mqtt://host:0/a", "bad port 0"),
        ("mqtt://host/a/+/u/4.3", "wildcard"),
        ("mqtt://host/a/#", r"no '\?' or '#'"),
        ("mqtt://host/a?x=1", "no query"),
    ],
)
def test_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason) as info:
        parse_url(url)
    assert "\n" not in str(info.value)


def test_error_never_shows_the_password() -> None:
    with pytest.raises(UsageError) as info:
        parse_url("mqtt://dep:hunter2@host:notaport/a")
    assert "hunter2" not in str(info.value)
