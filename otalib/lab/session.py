"""A lab session: a broker, a board and its console monitor, for step-through notebooks.

The board is otalab's virtual board (``board="virtual"``) or a real one on a serial
port (``/dev/ttyUSB0``, ``rfc2217://host:port``, …); either way its console is read
through the serial monitor (:attr:`LabSession.monitor`, a
:class:`~otalib.board.serial_board.SerialBoard` on the board's port), so the same
notebook code watches both. The broker is a managed one (``broker_url=""``) or any
external ``mqtt[s]://`` URL. Every wait is :func:`~otalib.board.follow.follow_update`
from the session's cursor. ``link`` puts a link profile (``"wifi"``, ``"dsl"``, ``"slow"``, or a
:class:`~otalib.net.link.LinkProfile`) between the virtual board and its broker, and a
:class:`~otalib.lab.live_console.LiveConsole` given to :meth:`LabSession.watch` shows the
console and the update's progress as they come.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from otalib.board.console import OutcomeTracker
from otalib.board.follow import DECIDED, Follow, follow_subscription, follow_update, is_decision
from otalib.board.protocol import ConsoleLine
from otalib.board.serial_board import SerialBoard
from otalib.board.sim.build import DeviceBuild
from otalib.broker import Broker, BrokerUser, start_broker
from otalib.errors import BoardError, UsageError
from otalib.formats.version import Version, topic_for
from otalib.lab.link_faults import LinkFaults
from otalib.lab.live_console import LiveConsole
from otalib.lab.progress import UpdateProgress
from otalib.lab.trial import FaultSpec
from otalib.mqtt.publish import DeployRecord, deploy
from otalib.mqtt.tls import TlsOptions
from otalib.mqtt.url import parse_url
from otalib.net.link import PROFILES, LinkProfile, LinkProxy
from otalib.procs import owned_tempdir
from otalib.update import Update
from otalib.vocabulary import Outcome, OutcomeKind, TimingProfile

#: The version of a session's board unless the build or the configuration names one.
SESSION_VERSION = Version(4, 3, 1)

#: Link names that mean no link proxy at all.
NO_LINK = ("", "none", "unlimited")


def link_profile(link: str | LinkProfile | None) -> LinkProfile | None:
    """A link profile by name (:data:`~otalib.net.link.PROFILES`: lan, wifi, dsl, slow); None for no proxy."""
    if link is None or isinstance(link, LinkProfile):
        return link
    if link in NO_LINK:
        return None
    if link not in PROFILES:
        raise UsageError(f"unknown link {link!r} (use {', '.join(sorted(PROFILES))} or unlimited)")
    return PROFILES[link]


class LabSession:
    """Broker + board + console monitor; a context manager that stops all it started.

    ``build`` is how the board's firmware was built (a
    :class:`~otalib.board.sim.build.DeviceBuild`; default: the lab configuration's, on
    version 4.3.1). Its ``firmware_timestamp`` (ms since 1900, as in the ``.ota`` header;
    default: the configuration's ``FIRMWARE_BUILD_TIMESTAMP``, else unknown) is the build
    time of the virtual board's firmware on a new flash: older ``.ota`` files are downgrades.

    ``broker_url`` (deployments) and ``board_broker_url`` (the board's own connection,
    e.g. with a device user's credentials) default to the managed broker's URL. ``link``
    (virtual board only): the board reaches its broker through a link proxy with this
    profile (:func:`link_profile`; :attr:`link` is the proxy).

    ``fault`` (virtual board only): a campaign spec's fault string (``cut@0.5``, ``power-loss@0.3``,
    ``drops:rate=0.5``, ``outages:every=5,for=1``, ``power:p=0.5``, ``bitflips:ber=1e-5``) on the link
    proxy (one with ``link``'s profile, else unlimited), striking each deployed package; a rate fault
    without its own ``seed=`` takes ``seed`` (else 0), and each deployment draws anew from the seed and its
    number (:class:`~otalib.lab.link_faults.LinkFaults`; what fired: :attr:`faults`'s ``events``).

    ``timing``: the virtual board's device timing (``esp8266``, ``esp8266-160``, ``esp32``, ``none``;
    default: the configuration's ``TIMING``, else ``none``), see :mod:`otalib.board.sim.timing`.
    """

    def __init__(
        self,
        *,
        board: str = "virtual",
        broker_url: str = "",
        backend: str = "auto",
        build: DeviceBuild | None = None,
        tls: bool = False,
        require_client_cert: bool = False,
        users: tuple[BrokerUser, ...] = (),
        board_tls: TlsOptions | None = None,
        board_broker_url: str | None = None,
        deploy_tls: TlsOptions | None = None,
        workdir: str | Path | None = None,
        baud: int = 115200,
        link: str | LinkProfile | None = None,
        timing: TimingProfile | str | None = None,
        fault: str = "none",
        seed: int | None = None,
        **board_options: Any,
    ) -> None:
        if timing is None:  # checked before anything starts
            from otalib.config import load_config

            timing = load_config().TIMING
        timing = TimingProfile.parse(timing)
        self.workdir = Path(workdir or owned_tempdir("session"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.build = _session_build(build)
        self.app_id = self.build.app_id
        self.version = self.build.running_version
        self.topic = topic_for(self.app_id, self.version)
        self._stack = contextlib.ExitStack()
        self.broker: Broker | None = None
        self.board = None
        self.link: LinkProxy | None = None
        self.last_deploy: DeployRecord | None = None
        profile = link_profile(link)
        if profile is not None and board != "virtual":
            raise UsageError("a link profile needs the virtual board (a real board connects to its own broker)")
        self.faults: LinkFaults | None = None
        if (fault or "none") != "none":
            FaultSpec.parse(fault)  # one line on a bad fault, before anything starts
            if board != "virtual":
                raise UsageError("a fault needs the virtual board (it acts through the link proxy)")
            profile = profile or LinkProfile(name="unlimited")
        self.deploy_tls = deploy_tls or TlsOptions()
        if not broker_url:
            self.broker = self._stack.enter_context(
                start_broker(
                    backend,
                    tls=tls,
                    require_client_cert=require_client_cert,
                    users=users,
                    workdir=self.workdir / "broker",
                )
            )
            broker_url = self.broker.url
            if tls and deploy_tls is None:
                self.deploy_tls = TlsOptions(ca=self.broker.ca_path)
        self.broker_url = broker_url
        if board == "virtual":
            from otalib.board.virtual import VirtualBoard

            tls_options = board_tls or (TlsOptions(ca=self.broker.ca_path) if tls and self.broker else None)
            if profile is not None:
                url = parse_url(board_broker_url or broker_url)
                self.link = self._stack.enter_context(LinkProxy(url.host, url.port, profile))
                board_options["link"] = self.link.address
            board_options["timing"] = timing
            self.board = VirtualBoard(
                self.workdir / "flash.bin",
                board_broker_url or broker_url,
                self.build,
                tls=tls_options,
                **board_options,
            )
            self._stack.callback(self.board.stop)
            port = self.board.console_path
            if (fault or "none") != "none" and self.link is not None:
                self.faults = self._stack.enter_context(LinkFaults(self.link, self.board, fault, seed))
        else:
            port = board
        #: the serial monitor on the board's console port (the only way the session reads the board)
        self.monitor = self._stack.enter_context(SerialBoard(port, baud))
        self.tracker = OutcomeTracker(quiet=5.0, timeout=60.0)
        self._cursor = 0
        if self.board is not None:
            self.board.start()

    def __enter__(self) -> LabSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the board, the monitor and the managed broker."""
        self._stack.close()

    @property
    def deploy_url(self) -> str:
        """The URL that publishes to this board's update topic."""
        return self.broker_url.rstrip("/") + "/" + self.topic

    def wait_ready(self, timeout: float = 20.0) -> ConsoleLine:
        """Wait until the board is connected and subscribed to its update topic; returns the console's
        ``tcp_connected`` line (see :func:`~otalib.board.follow.follow_subscription`)."""
        follow = follow_subscription(
            self.monitor, self.tracker, timeout, suback=getattr(self.board, "suback", None), start=self._cursor
        )
        self._cursor = follow.cursor
        assert follow.last is not None  # the follow ended at that line
        return follow.last

    def _catch_up(self) -> None:
        """Feed the tracker every line received so far (without waiting)."""
        while True:
            line, cursor = self.monitor.line_at(self._cursor, 0)
            if line is None:
                return
            self._cursor = cursor
            self.tracker.feed(line)

    def deploy(self, update: Update | bytes | None, *, clear: bool = False, **options: Any) -> DeployRecord:
        """Publish a package (retained, QoS 2) to the board's topic; arms the outcome tracker."""
        self._catch_up()
        package = update.package if isinstance(update, Update) else update
        self.tracker.rearm()
        if not clear:
            self.tracker.published(time.time())
        if self.faults is not None and isinstance(package, (bytes, bytearray)) and not clear:
            self.faults.arm(len(package))  # the fault strikes this package (a rate fault: a new draw)
        record = deploy(package, self.deploy_url, tls=options.pop("tls", self.deploy_tls), clear=clear, **options)
        if not clear:
            self.last_deploy = record
        return record

    def progress(self) -> UpdateProgress:
        """A fresh progress of the last deployed package (its bytes on its topic), for a live console."""
        if self.last_deploy is None:
            raise UsageError("nothing deployed yet: deploy an update before following its progress")
        return UpdateProgress.for_package(self.last_deploy.bytes, self.last_deploy.topic)

    def follow(
        self, timeout: float = 30.0, *, quiet: float | None = None, view: LiveConsole | None = None
    ) -> Iterator[ConsoleLine]:
        """Console lines from the session's cursor, as they come, until the update's outcome is decided
        (or ``timeout`` s); each also goes to ``view`` (closed at the end)."""
        if quiet is not None:
            self.tracker.quiet = quiet
        follow = follow_update(
            self.monitor,
            self.tracker,
            DECIDED,
            timeout,
            start=self._cursor,
            poll_s=0.1,
            on_tick=None if view is None else lambda: view.tick(),
            on_outcome=self._past_power_cut,
        )
        return self._console_lines(follow, view)

    def _past_power_cut(self, outcome: Outcome, line: ConsoleLine | None) -> bool:
        """The reboot after a fault's power cut is not the update's outcome: the retained update comes again."""
        if outcome.kind is OutcomeKind.RESTARTED and line is not None and self.faults and self.faults.take_power_cut():
            self.tracker.rearm()
            self.tracker.published(line.t)
            return False
        return True

    def watch(
        self, timeout: float = 30.0, *, quiet: float | None = None, view: LiveConsole | None = None
    ) -> list[ConsoleLine]:
        """Console lines from now until the update's outcome is decided (or ``timeout`` s), shown live on
        ``view`` (e.g. a :class:`~otalib.lab.live_console.NotebookConsole` of :meth:`progress`)."""
        return list(self.follow(timeout, quiet=quiet, view=view))

    def record(self, seconds: float) -> list[ConsoleLine]:
        """Every console line of the next ``seconds`` s (e.g. to see an update loop)."""
        follow = follow_update(self.monitor, self.tracker, None, seconds, start=self._cursor, poll_s=0.1)
        return list(self._console_lines(follow))

    def _console_lines(self, follow: Follow, view: LiveConsole | None = None) -> Iterator[ConsoleLine]:
        try:
            for line in follow:
                self._cursor = follow.cursor
                if is_decision(line):
                    if view is not None and follow.outcome is not None:
                        view.decided(follow.outcome)
                    continue
                if view is not None:
                    view.add(line)
                yield line
        finally:
            if view is not None:
                view.close()

    @property
    def outcome(self) -> Outcome | None:
        """The tracker's decision about the last deployed update."""
        return self.tracker.outcome

    def expect_outcome(self, wanted: Outcome | str, timeout: float = 30.0) -> list[ConsoleLine]:
        """Watch, then raise :class:`BoardError` unless the outcome is ``wanted`` (or its text form)."""
        lines = self.watch(timeout)
        if self.outcome is None or self.outcome.text != str(wanted):
            raise BoardError(f"expected outcome {wanted}, got {self.outcome}")
        return lines


def _session_build(build: DeviceBuild | None) -> DeviceBuild:
    """``build``, or the lab configuration's (on 4.3.1); an unknown firmware timestamp is the configuration's."""
    from otalib.config import load_config

    config = load_config()
    if build is None:
        return config.device_build(DeviceBuild(version=SESSION_VERSION))
    if build.firmware_timestamp is None and config.FIRMWARE_BUILD_TIMESTAMP is not None:
        return replace(build, firmware_timestamp=config.FIRMWARE_BUILD_TIMESTAMP)
    return build
