"""``otalab demo``: the main job of ``make demo``."""

from __future__ import annotations

from pathlib import Path

import click

from otalib.net.link import PROFILES


@click.command("demo")
@click.option("--out", default="data/demo", type=click.Path(file_okay=False, path_type=Path), help="output folder")
@click.option("--no-campaign", is_flag=True, help="only the watched update")
@click.option(
    "--link",
    type=click.Choice(["unlimited", *sorted(PROFILES)]),
    default="wifi",
    show_default=True,
    help="the link the board takes the watched update over (wifi: 50 KB/s, 20 ms)",
)
def demo_cmd(out: Path, no_campaign: bool, link: str) -> None:
    """Broker, virtual board, signed update watched live on its console, small campaign, charts."""
    from otalib.demo import run_demo

    run_demo(out, click.echo, campaign=not no_campaign, link=link)


def register(group: click.Group) -> None:
    """Add ``otalab demo``."""
    group.add_command(demo_cmd)
