"""``otalab fleet``: a virtual fleet taking one retained update."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import click


@click.command("fleet")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Results folder."
)
@click.option("--broker", help="An external broker's URL (else the spec's broker:, else the managed Mosquitto).")
@click.option("--workers", type=click.IntRange(0, 256), default=0, help="Shards on a Dask LocalCluster of N workers.")
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    help="Shards as N child processes (1: all boards in this process; default: one per core from 200 boards).",
)
@click.option("--scheduler", help="An existing Dask cluster (tcp://HOST:PORT); needs --broker.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), help="Scale each group's count (at least 1).")
@click.option("--console-logs", is_flag=True, help="Write every board's console to OUT/consoles/BOARD.log.")
@click.option("--console", "console_board", metavar="BOARD", help="Attach BOARD's console to a pty (otalab monitor).")
def fleet_cmd(
    spec: Path,
    out_dir: Path,
    broker: str | None,
    workers: int,
    processes: int | None,
    scheduler: str | None,
    scale: float | None,
    console_logs: bool,
    console_board: str | None,
) -> None:
    """Run the fleet SPEC (YAML/JSON: groups of boards and one update) into OUT.

    Writes boards.parquet, timeline.parquet, load.parquet, fault_events.parquet and
    metadata.json (status complete, or incomplete when interrupted: what was measured is kept).
    """
    from otalib.fleet import FleetSession, FleetSpec

    fleet = FleetSpec.load(spec)
    if scale is not None:
        fleet = fleet.scaled(scale)
    session = FleetSession(
        fleet,
        broker=broker,
        workers=workers,
        processes=processes,
        scheduler=scheduler,
        console_logs=console_logs,
        pty_board=console_board,
        on_status=lambda text: click.echo(text, err=True),
    )
    click.echo(session.estimate.describe(), err=True)
    with _terminate_as_interrupt():
        try:
            result = session.run(out_dir)
        except KeyboardInterrupt:
            click.echo(f"otalab: fleet interrupted: partial results (incomplete) in {out_dir}", err=True)
            raise
    click.echo(f"results: {out_dir} ({result.meta['status']})")
    counts = result.outcomes()
    click.echo(counts.to_string())
    for fraction in (0.5, 0.9, 0.99):
        t = result.time_to(fraction)
        click.echo(f"time to {fraction:.0%} updated: {'never' if t != t else f'{t:.2f} s'}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Any:
    """SIGTERM (a kill) stops the fleet as Ctrl-C does: partial results are written."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def register(group: click.Group) -> None:
    group.add_command(fleet_cmd)
