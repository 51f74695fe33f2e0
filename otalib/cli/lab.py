"""``otalab campaign`` and ``otalab report``: run a trial grid, chart its results."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("campaign")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (e.g. data/runs/NAME).",
)
@click.option(
    "--new",
    "--no-resume",
    "new",
    is_flag=True,
    help="Start over; an existing run in the directory is kept beside it as NAME.old-<its start time>.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The board's key file (overrides the spec's key:; real boards default to OTA_KEY).",
)
@click.option(
    "--rom",
    "roms",
    multiple=True,
    metavar="FILE@ADDRESS",
    help="A ROM to publish (overrides the spec's roms:; its patch: firmware.patch or fixed.patch).",
)
@click.option(
    "--patch",
    type=click.IntRange(min=0),
    help="The firmware's APP_VERSION_PATCH (overrides firmware.patch; a ROM file does not carry it).",
)
@click.option(
    "--allow-demo-image", is_flag=True, help="Publish otalab's demo images (no application code) to a real board too."
)
@click.option(
    "--parallel",
    type=int,
    metavar="K",
    help="Trials at once, each on its own virtual board and topic (overrides the spec's parallel:; default 1).",
)
def campaign_cmd(
    config: Path,
    out_dir: Path,
    new: bool,
    no_progress: bool,
    key: Path | None,
    roms: tuple[str, ...],
    patch: int | None,
    allow_demo_image: bool,
    parallel: int | None,
) -> None:
    """Run the campaign CONFIG (YAML/JSON grid × repeats) into a run directory.

    A run directory belongs to one spec: running again resumes it (the trials already
    done are skipped); a changed spec is refused unless --new. The board's key and the
    firmware to publish come from the spec (key:, roms:/firmware:) or --key/--rom; a
    real board is never sent otalab's demo image unless --allow-demo-image.
    """
    from otalib.cli.common import get_config
    from otalib.lab.campaign import CampaignSpec, check_run_dir
    from otalib.lab.trial import run_campaign_on_bench

    overrides = {
        "key": str(key.resolve()) if key else None,
        "roms": [_absolute_rom(rom) for rom in roms],
        "patch": patch,
        "allow_demo_image": allow_demo_image,
        "parallel": parallel,
    }
    spec = CampaignSpec.load(config, overrides=overrides)
    aside = check_run_dir(spec, out_dir, resume=not new)  # before any broker starts
    if aside is not None:
        click.echo(f"keeping the old run of {out_dir} as {aside}")
    df = run_campaign_on_bench(spec, out_dir, progress=not no_progress, resume=not new, config=get_config())
    counts = df["outcome"].value_counts().to_dict() if len(df) else {}
    text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no trials"
    click.echo(f"{len(df)} trials in {out_dir}: {text}")


def _absolute_rom(text: str) -> str:
    """``FILE@ADDRESS`` with FILE made absolute (the CLI's paths are the working directory's)."""
    from otalib.lab.inputs import parse_rom_spec

    file, address = parse_rom_spec(text)
    return f"{Path(file).resolve()}@{address:#x}"


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default RUN_DIR/report).",
)
def report_cmd(run_dir: Path, out_dir: Path | None) -> None:
    """Write the charts (PNG) and summary table of the run in RUN_DIR."""
    from otalib.lab.report import write_report

    for path in write_report(run_dir, out_dir):
        click.echo(str(path))


def register(group: click.Group) -> None:
    """Add the lab commands to the ``otalab`` group."""
    group.add_command(campaign_cmd)
    group.add_command(report_cmd)
