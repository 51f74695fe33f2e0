"""The ``otalab`` command line: a thin layer over otalib.

Each area of the CLI lives in its own module of this package and exposes
``register(group)``; :data:`AREAS` lists them. Errors from otalib become one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from otalib import __version__
from otalib.errors import OtaLabError

#: CLI modules, each defining ``register(group: click.Group) -> None``.
AREAS = ("formats", "keys", "image", "build", "broker", "deploy", "board", "monitor", "lab", "link")


class OtalabGroup(click.Group):
    """Click group that turns otalib errors into one clear line."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            click.echo(f"otalab: error: {exc.format_message()}{hint}", err=True)
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


def _register_areas() -> None:
    for area in AREAS:
        name = f"otalib.cli.{area}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # area not built (yet)
            raise
        module.register(cli)


_register_areas()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``otalab`` command."""
    try:
        cli.main(args=argv, prog_name="otalab", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
