"""Small helpers shared by the CLI areas."""

from __future__ import annotations

import json
from typing import Any

import click

from otalib.config import LabConfig, load_config
from otalib.errors import UsageError


def parse_address(text: str) -> int:
    """A flash address: decimal or ``0x`` hex, non-negative."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise UsageError(f"bad address {text!r}: decimal or hexadecimal (0x...) expected") from None
    if value < 0:
        raise UsageError(f"bad address {text!r}: must not be negative")
    return value


def parse_file_at(spec: str) -> tuple[str, int]:
    """``FILE@ADDRESS`` as the reference tool takes it."""
    file, sep, address = spec.rpartition("@")
    if not sep or not file or not address:
        raise UsageError(f"bad ROM spec {spec!r}: expected FILE@ADDRESS, e.g. rom0.bin@0x2000")
    return file, parse_address(address)


def get_config(ctx: click.Context | None = None) -> LabConfig:
    """The lab configuration (``otalab.toml`` + environment), loaded once per command."""
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, dict):
        root.obj = {}
    if "config" not in root.obj:
        root.obj["config"] = load_config()
    return root.obj["config"]


def echo_json(data: Any) -> None:
    """One JSON object on stdout."""
    click.echo(json.dumps(data, sort_keys=False, default=str))


def warn(message: str) -> None:
    """One warning line on stderr."""
    click.echo(f"otalab: warning: {message}", err=True)
