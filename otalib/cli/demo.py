"""``otalab demo``: the main job of ``make demo``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", default="data/demo", type=click.Path(file_okay=False, path_type=Path), help="output folder")
@click.option("--no-campaign", is_flag=True, help="only the watched update")
def demo_cmd(out: Path, no_campaign: bool) -> None:
    """Broker, virtual board, signed update watched on its console, small campaign, charts."""
    from otalib.demo import run_demo

    run_demo(out, click.echo, campaign=not no_campaign)


def register(group: click.Group) -> None:
    """Add ``otalab demo``."""
    group.add_command(demo_cmd)
