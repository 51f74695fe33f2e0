"""``otalab link``: a fault-injecting TCP link between a board and its broker, in the foreground."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import click

from otalib.errors import UsageError
from otalib.net.address import parse_hostport
from otalib.net.faults import FaultPlan, RateFault, RateKind, connected_seconds, trial_rng
from otalib.net.link import PROFILES, Fault, LinkProfile, LinkProxy

#: Seconds of timed faults ``--at-rate`` draws; how often the foreground loop fires the due ones.
HORIZON_S = 3600.0
TICK_S = 0.05


def build_fault(
    cut_after: int | None,
    corrupt_at: int | None,
    stall_at: int | None,
    stall_for: float | None,
    within: str,
    every: bool,
) -> Fault | None:
    """The one fault the options ask for (None if none)."""
    asked = [
        name
        for name, value in (("--cut-after", cut_after), ("--corrupt-at", corrupt_at), ("--stall-at", stall_at))
        if value is not None
    ]
    if len(asked) > 1:
        raise UsageError(f"one fault at a time: {' and '.join(asked)} given")
    if stall_for is not None and stall_at is None:
        raise UsageError("--stall-for needs --stall-at")
    common: dict[str, Any] = {"within": within, "once": not every}
    if cut_after is not None:
        return Fault("cut", cut_after, **common)
    if corrupt_at is not None:
        return Fault("corrupt", corrupt_at, **common)
    if stall_at is not None:
        return Fault("stall", stall_at, duration_s=stall_for, **common)
    return None


def build_timed_plan(text: str | None) -> FaultPlan:
    """The drops or outages of ``--at-rate`` over :data:`HORIZON_S` (empty without it)."""
    if not text:
        return FaultPlan()
    fault = RateFault.parse(text)
    if fault.kind not in (RateKind.DROPS, RateKind.OUTAGES):
        raise UsageError(f"--at-rate takes drops or outages; {fault.kind.value} needs a payload: use it in a trial")
    return fault.draw(trial_rng(fault.seed, "otalab-link"), 0, HORIZON_S)


def build_profile(profile: str | None, rate: float | None, latency_ms: float | None) -> LinkProfile:
    """A named profile, overridden by --rate / --latency."""
    base = PROFILES[profile] if profile else PROFILES["lan"]
    if rate is None and latency_ms is None:
        return base
    return LinkProfile(
        rate_Bps=rate if rate is not None else base.rate_Bps,
        latency_s=latency_ms / 1000 if latency_ms is not None else base.latency_s,
        name="custom" if profile is None else f"{profile}+custom",
        up_rate_Bps=rate if rate is not None else base.up_rate_Bps,
    )


@click.command("link")
@click.option("--upstream", required=True, metavar="HOST:PORT", help="the broker to forward to")
@click.option(
    "--listen",
    "listen",
    default="127.0.0.1:0",
    show_default=True,
    metavar="[HOST:]PORT",
    help="where the board connects (port 0: any free port)",
)
@click.option("--profile", type=click.Choice(sorted(PROFILES)), help="named link profile (wifi = 50 KB/s, 20 ms)")
@click.option("--rate", type=click.FloatRange(min=1), metavar="BPS", help="bytes per second, each direction")
@click.option("--latency", "latency_ms", type=click.FloatRange(min=0), metavar="MS", help="one-way latency (ms)")
@click.option("--cut-after", type=click.IntRange(min=0), metavar="N", help="close the link after N bytes downstream")
@click.option("--corrupt-at", type=click.IntRange(min=0), metavar="N", help="flip downstream byte N")
@click.option("--stall-at", type=click.IntRange(min=0), metavar="N", help="stop forwarding after N bytes downstream")
@click.option("--stall-for", type=click.FloatRange(min=0), metavar="S", help="stall length (default: until stopped)")
@click.option(
    "--offsets",
    "within",
    type=click.Choice(["stream", "payload"]),
    default="stream",
    show_default=True,
    help="count N from the connection start or from the first MQTT PUBLISH payload",
)
@click.option("--every", is_flag=True, help="apply the fault to every connection, not only the first")
@click.option(
    "--at-rate",
    "at_rate",
    metavar="FAULT",
    help="drops:rate=R (per second of connection) or outages:every=S,for=D (,seed=N): disconnects / stalls at"
    " random times",
)
def link_cmd(
    upstream: str,
    listen: str,
    profile: str | None,
    rate: float | None,
    latency_ms: float | None,
    cut_after: int | None,
    corrupt_at: int | None,
    stall_at: int | None,
    stall_for: float | None,
    within: str,
    every: bool,
    at_rate: str | None,
) -> None:
    """Forward a board's connection to the broker through a slow or faulty link until Ctrl-C.

    Offsets count bytes from the broker to the board; the board connects to the printed address.
    """
    up_host, up_port = parse_hostport(upstream, port_zero=False, what="--upstream")
    listen_host, listen_port = parse_hostport(listen, what="--listen")
    fault = build_fault(cut_after, corrupt_at, stall_at, stall_for, within, every)
    link_profile = build_profile(profile, rate, latency_ms)
    plan, fired_timed = build_timed_plan(at_rate), 0
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    proxy = LinkProxy(up_host, up_port, link_profile, fault, listen_host=listen_host, listen_port=listen_port)
    try:
        with proxy:
            click.echo(f"link: {proxy.address} -> {up_host}:{up_port}", nl=True)
            rate_text = "unlimited" if link_profile.rate_Bps is None else f"{link_profile.rate_Bps:g} B/s"
            fault_text = "none" if fault is None else f"{fault.kind} at byte {fault.at_byte} ({fault.within})"
            click.echo(
                f"link: profile {link_profile.name}: {rate_text}, latency {link_profile.latency_s * 1000:g} ms;"
                f" fault: {fault_text}"
            )
            if at_rate:
                click.echo(f"link: at rate: {at_rate}: {len(plan.timed())} event(s) drawn for the first hour")
            started = time.monotonic()
            try:
                while not stop.wait(TICK_S):
                    # drops: R per second of connection (no drop while nobody is connected); outages: of time
                    clock = connected_seconds(proxy.stats, started) if plan.drops_s else time.monotonic() - started
                    for t, kind, duration in plan.due(clock, fired_timed):
                        fired_timed += 1
                        if kind == "drop":
                            proxy.cut_all(abort=True)
                        else:
                            proxy.stall(duration)
                        click.echo(f"link: {kind} at {t:.2f}s" + (f" for {duration:.2f}s" if duration else ""))
            except KeyboardInterrupt:
                pass
            stats = proxy.stats
    finally:
        signal.signal(signal.SIGTERM, previous)
    fired = ", ".join(f"{kind}@{offset}" for kind, offset, _t in stats["faults_fired"]) or "none"
    click.echo(
        f"link: stopped: {stats['connections']} connection(s), {stats['bytes_down']} bytes down, "
        f"{stats['bytes_up']} up; faults fired: {fired}"
    )


def register(group: click.Group) -> None:
    """Add ``otalab link``."""
    group.add_command(link_cmd)
