"""The ``otalab`` command line: a thin layer over otalib.

Each area of the CLI lives in its own module of this package and exposes
``register(group)``; :data:`COMMANDS` maps each command to its area, which is
imported only when that command runs (a quick start matters: ``otalab deploy``
is timed against ``mosquitto_pub``). Errors from otalib become one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from otalib import __version__
from otalib.errors import OtaLabError

#: Command name -> CLI area module (``otalib.cli.<area>``) that registers it.
COMMANDS: dict[str, str] = {
    "keygen": "keys",
    "keys": "keys",
    "mkfile": "formats",
    "pack": "formats",
    "inspect": "formats",
    "image": "image",
    "build": "build",
    "broker": "broker",
    "deploy": "deploy",
    "board": "board",
    "config": "config",
    "monitor": "monitor",
    "flash": "monitor",
    "link": "link",
    "campaign": "lab",
    "report": "lab",
    "demo": "demo",
    "fleet": "fleet",
}


class OtalabGroup(click.Group):
    """Click group that loads command areas lazily and turns otalib errors into one clear line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            _load_area(self, COMMANDS[cmd_name])
        return self.commands.get(cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["otalab.argv"] = list(args)  # a usage error must still honour --json
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            click.echo(f"otalab: error: {exc.format_message()}{hint}", err=True)
            if "--json" in ctx.meta.get("otalab.argv", ()):
                click.echo(json.dumps({"ok": False, "error": exc.format_message(), "usage": True}))
            ctx.exit(2)
        except OtaLabError as exc:
            click.echo(f"otalab: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except FileNotFoundError as exc:
            click.echo(f"otalab: error: no such file: {exc.filename}", err=True)
            ctx.exit(1)
        except PermissionError as exc:
            click.echo(f"otalab: error: permission denied: {exc.filename}", err=True)
            ctx.exit(1)
        except IsADirectoryError as exc:
            click.echo(f"otalab: error: is a directory: {exc.filename}", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"otalab: error: {exc.strerror or exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("otalab: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=OtalabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="otalab")
def cli() -> None:
    """otalab: build, sign, publish and watch OTA-over-MQTT firmware updates."""


def _load_area(group: click.Group, area: str) -> None:
    module: Any = importlib.import_module(f"otalib.cli.{area}")
    module.register(group)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``otalab`` command."""
    try:
        cli.main(args=argv, prog_name="otalab", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
