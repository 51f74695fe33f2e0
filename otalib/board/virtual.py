"""The virtual board: a :class:`~otalib.board.sim.device.Device` on an MQTT connection, console on a pty.

:class:`VirtualBoard` runs in background threads of this process: a control thread
(boot, restart after the update, reset, power cycle), paho's network thread (the
streamed message goes straight into the device) and a pty writer. Its console is
written, in the real device's line formats, to the master side of a pseudo-terminal
(:attr:`VirtualBoard.console_path` is the slave: open it with
:class:`~otalib.board.serial_board.SerialBoard` as a real board's port) and parsed
into the board's own console (lossless), read through the console protocol.

:class:`VirtualBoardProcess` runs ``otalab board …`` as a subprocess and reads its pty,
so a power loss can be a real ``kill -9`` (the flash file stays as it was) and a new start.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from otalib import procs
from otalib.board.console import ConsoleParser
from otalib.board.protocol import BufferedConsole, ConsoleBuffer
from otalib.board.serial_board import LineSplitter, SerialBoard
from otalib.board.sim.build import DeviceBuild
from otalib.board.sim.device import Device, UpdateResult
from otalib.board.sim.flash import SECTOR, FlashImage
from otalib.board.sim.sming_console import RST_EXTERNAL, RST_POWER_ON, ConsolePlatform, SmingConsole
from otalib.board.sim.timing import RealTimePacer, TimingModel
from otalib.errors import BoardError, UsageError
from otalib.mqtt import paho_compat
from otalib.mqtt.streaming import ESP_TCP_MSS, StreamingClient
from otalib.mqtt.tls import TlsOptions, make_ssl_context
from otalib.mqtt.url import MqttUrl, parse_url
from otalib.net.address import parse_hostport
from otalib.vocabulary import DeviceState, TimingProfile

#: The client id of Sming's Upgrade sample.
CLIENT_ID = "sming"


def parse_link(link: str | tuple[str, int] | None) -> tuple[str, int] | None:
    """``"HOST:PORT"`` -> ``(host, port)``."""
    if link is None or isinstance(link, tuple):
        return link
    return parse_hostport(link, default_host=None, port_zero=False, what="--link")


#: An untimed board takes the TCP segments of one socket read in one step where the device prints nothing
#: between them (:meth:`~otalib.board.sim.device.Device.on_segments`: the same console, flash and decision
#: as one segment at a time; a board with a timing model spends its device time segment by segment).
BULK_SEGMENTS = True

#: How long the pty writer lets a burst of console text gather (s; a burst: more text came while it woke for
#: the first, a lone line goes out at once): the lines of a burst (two per TCP segment) go out in one write,
#: not one write (and thread switch) per line; a real UART at 115200 baud takes longer than this for one line.
PTY_GATHER_S = 0.001


class _PtyConsole:
    """Writes console text to a pty master without ever blocking the device (a UART drops
    output nobody reads; here a bounded backlog drops the oldest text).

    :meth:`write` only queues (no lock, no thread switch); the writer thread takes what has
    gathered, in order, and writes it in one piece as the reader takes it. When the pty takes
    nothing for ``stall`` s (nobody reads), its oldest unread text is dropped to make room."""

    def __init__(self, max_pending: int = 20_000, gather: float = PTY_GATHER_S, stall: float = 0.2) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.dropped = 0
        self.max_pending = max_pending
        self.gather = gather
        self.stall = stall
        self._closing = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # close() wakes a writer waiting for the reader
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: the end
        self._thread = threading.Thread(target=self._run, name="virtual-board-pty", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        self._queue.put(data)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            if self.gather and batch[0] is not None and self._queue.qsize() and not self._closing.is_set():
                time.sleep(self.gather)  # more came meanwhile: a burst, let the rest of it come
            with contextlib.suppress(queue.Empty):
                while batch[-1] is not None:
                    batch.append(get_nowait())
            end = batch[-1] is None
            if end:
                batch.pop()
            if len(batch) > self.max_pending:  # the oldest text goes, as a full UART buffer drops it
                self.dropped += len(batch) - self.max_pending
                del batch[: len(batch) - self.max_pending]
            if (batch and not self._write_out(b"".join(batch))) or end:
                return

    def _write_out(self, data: bytes) -> bool:
        """Write ``data`` as the reader takes it (False: stop, the pty is closing or gone)."""
        view = memoryview(data)
        while len(view):
            self._trim()
            try:
                # closing: what nobody reads any more is dropped at once, not drained
                wait = 0.0 if self._closing.is_set() else self.stall
                _, ready, _ = select.select([self._wake_r], [self.master], [], wait)
                if not ready and self._closing.is_set():
                    return False
                if ready:
                    view = view[os.write(self.master, view) :]
                    continue
                # drain our own slave copy when nobody else reads, so the writer never stalls
                if select.select([self.slave], [], [], 0)[0]:
                    os.read(self.slave, 65536)
                    self.dropped += 1
            except OSError:
                return False
        return True

    def _trim(self) -> None:
        """While the reader is slower than the device, keep at most ``max_pending`` writes waiting (the oldest go)."""
        with contextlib.suppress(queue.Empty):
            while self._queue.qsize() > self.max_pending:
                if self._queue.get_nowait() is None:  # closing: the end marker goes last anyway
                    self._queue.put(None)
                    return
                self.dropped += 1

    def close(self, timeout: float = 1.0) -> None:
        """Flush what a reader takes now, drop the rest, and stop the writer."""
        self._closing.set()
        self._queue.put(None)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join(timeout)
        for fd in (self.master, self.slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class _DeviceSink:
    """paho's streamed message -> the device (runs on paho's network thread)."""

    def __init__(self, board: VirtualBoard) -> None:
        self.board = board

    def message_start(self, topic: str, length: int, retain: bool, qos: int) -> None:
        self.board.device.on_message_start(length)

    def message_data(self, chunk: bytes) -> None:
        self.board.device.on_message_data(chunk)

    def message_segments(self, data: bytes, sizes: list[int], wires: list[int]) -> None:
        """Several segments at once (an untimed board: see :data:`BULK_SEGMENTS`)."""
        self.board.device.on_segments(data, sizes, wires)

    def message_end(self) -> None:
        self.board._update_done(self.board.device.on_message_end())

    def message_abort(self) -> None:
        self.board._update_done(self.board.device.on_message_abort())


class VirtualBoard(BufferedConsole):
    """A virtual Sming device (rBoot, two ROM slots, OTA-over-MQTT client) behind the Board protocol.

    ``flash``: the flash file (created with a demo image of the build's version in rom0
    when new, see :meth:`prepare_flash`). ``build``: how the device was built (a
    :class:`~otalib.board.sim.build.DeviceBuild`: app id, version, mode and keys, chip,
    flash layout…). ``broker``: ``mqtt[s]://[user:pw@]host[:port]`` (a path
    is ignored: the device subscribes to its own topic). ``link``: connect to this
    ``(host, port)`` instead (a proxy). ``on_update`` is called with each
    :class:`~otalib.board.sim.device.UpdateResult` (from a background thread).
    ``tcp_mss``: the largest TCP segment the device's stack hands over (1460 on an ESP8266;
    the Host emulator's recordings show 1390; an untimed board takes the segments of one socket read
    in one step where the device prints nothing between them, see :data:`BULK_SEGMENTS`). ``banners``: the boot banners
    (:class:`~otalib.board.sim.sming_console.ConsolePlatform`: the Host emulator's, or a
    real ESP8266's ROM and rBoot banners). ``console_history``: how many console lines the board
    keeps for its readers (the pty gets them all; a 1 MB update prints about 1,500 lines).
    ``client_id``: its MQTT client id (Sming's sample: ``sming``; boards sharing a broker need their own).
    ``timing``: the device whose time the board takes (:class:`~otalib.vocabulary.TimingProfile`;
    ``none``: instant), its draws seeded by ``timing_seed``: the device erases, writes, hashes,
    verifies, reboots and reconnects for the model's time (:mod:`otalib.board.sim.timing`), its
    network thread reading the socket only as fast as that, through a receive buffer of the chip's
    TCP window (and segments of its MSS), so the broker or link proxy sees a device-speed receiver.
    """

    def __init__(
        self,
        flash: str | os.PathLike[str],
        broker: str | MqttUrl,
        build: DeviceBuild | None = None,
        *,
        debug_level: int = 3,
        tls: TlsOptions | None = None,
        link: str | tuple[str, int] | None = None,
        restart_delay: float = 1.0,
        tcp_mss: int = ESP_TCP_MSS,
        initial_image: bytes | None = None,
        partitions: bytes | None = None,
        keepalive: int = 60,
        name: str = "virtual",
        on_update: Callable[[UpdateResult], None] | None = None,
        banners: ConsolePlatform | str = ConsolePlatform.HOST,
        console_history: int = 200_000,
        client_id: str = CLIENT_ID,
        timing: TimingProfile | str = TimingProfile.NONE,
        timing_seed: int | np.random.Generator = 0,
    ) -> None:
        build = build or DeviceBuild()
        self.timing = TimingProfile.parse(timing)
        model = None if self.timing is TimingProfile.NONE else TimingModel(self.timing, timing_seed)
        self.build = build
        self.name = name
        self.client_id = client_id
        self.url = broker if isinstance(broker, MqttUrl) else parse_url(broker)
        self.tls = tls or TlsOptions()
        self.link = parse_link(link)
        self.restart_delay = restart_delay
        self.tcp_mss = model.chip.tcp_mss if model is not None else tcp_mss
        #: the socket's receive buffer: the chip's TCP window (None: the system's, for an instant board)
        self.rcvbuf = model.chip.tcp_window if model is not None else None
        self._pacer = RealTimePacer()
        self.keepalive = keepalive
        self.on_update = on_update
        self._ssl = make_ssl_context(self.tls) if self.url.tls else None
        self.flash = prepare_flash(flash, build, initial_image=initial_image, partitions=partitions)
        self._console = ConsoleBuffer(console_history)
        self._parser = ConsoleParser()
        self._splitter = LineSplitter()
        self._pty = _PtyConsole()
        self._write_lock = threading.Lock()
        sming = SmingConsole(self._write, debug_level, platform=banners)
        self.device = Device(
            self.flash,
            build,
            debug_level=debug_level,
            console=sming,
            flash_file_name=Path(flash).name,
            timing=model,
            pacer=self._pacer,
        )
        self.updates: list[UpdateResult] = []
        self.connected = threading.Event()
        #: set at the broker's SUBACK (a side channel: the device's console says nothing then)
        self.suback = threading.Event()
        self.last_error: str | None = None
        self._commands: queue.Queue[str] = queue.Queue()
        self._client: StreamingClient | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._version: str | None = None

    # -- console --
    @property
    def console_path(self) -> str:
        """The pty to open as this board's serial port."""
        return self._pty.path

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")  # the ROM's noise: raw bytes
        with self._write_lock:
            self._pty.write(data)
            parse = self._parser.parse
            lines = [parse(line, t) for t, line in self._splitter.feed(data, time.time())]
            for parsed in lines:
                if parsed.event == "running":
                    self._version = parsed.fields.get("version")
            self._console.push_many(lines)

    # -- life cycle --
    def start(self) -> VirtualBoard:
        """Power on: boot and connect in background threads."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"virtual-board-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Power off (the flash file stays) and release the pty."""
        if self._stopped.is_set():
            return
        self._commands.put("stop")
        self._pacer.interrupt()  # a device time being spent ends now
        if self._thread is not None:
            self._thread.join(timeout)
        self._stopped.set()
        self._disconnect()
        self._pty.close()
        self.flash.close()
        self._console.close()

    close = stop

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Press reset: the device reboots at once (an update in flight is lost)."""
        self._commands.put("reset")
        self._pacer.interrupt()

    def power_cycle(self) -> None:
        """Cut power mid-whatever (the flash keeps what was written) and boot again."""
        self._commands.put("power")
        self._pacer.interrupt()

    def current_version(self) -> str | None:
        """The application version the console last reported (``major.minor``)."""
        return self._version

    @property
    def status(self) -> dict[str, Any]:
        """The device's status plus connection facts."""
        return {
            **self.device.status,
            "name": self.name,
            "console": self.console_path,
            "broker": str(self.url),
            "link": f"{self.link[0]}:{self.link[1]}" if self.link else None,
            "connected": self.connected.is_set(),
            "last_error": self.last_error,
            "layout": {
                "name": self.flash.layout.name,
                "roms": [f"{addr:#x}" for addr in self.flash.layout.roms],
                "slot_size": self.flash.layout.slot_size,
            },
        }

    # -- control thread --
    def _run(self) -> None:
        command = "boot"
        while command != "stop":
            if command in ("restart", "reset", "power"):
                self._disconnect()
            self._pacer.resume()
            if command == "restart":
                boot = self.device.restart()
            else:
                boot = self.device.boot(RST_EXTERNAL if command == "reset" else RST_POWER_ON)
            if boot.booted:
                self.device.connecting(*(self.link or (self.url.host, self.url.port)))
                self._connect()
            command = self._wait_command()

    def _wait_command(self) -> str:
        while True:
            command = self._commands.get()
            if command == "restart_pending":
                try:
                    command = self._commands.get(timeout=self.restart_delay)
                except queue.Empty:
                    return "restart"
                if command == "restart_pending":
                    continue
            return command

    def _update_done(self, result: UpdateResult) -> None:
        self.updates.append(result)
        if self.on_update is not None:
            with contextlib.suppress(Exception):  # an observer's error must not stop the device
                self.on_update(result)
        if result.restart:
            self._commands.put("restart_pending")

    # -- MQTT --
    def _connect(self) -> None:
        client = StreamingClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
            stream_sink=_DeviceSink(self),
            tcp_mss=self.tcp_mss,
            on_segment=self.device.segment_received,
            rcvbuf=self.rcvbuf,
            bulk=BULK_SEGMENTS and self.device.timing is None,
        )
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        if self._ssl is not None:
            client.tls_set_context(self._ssl)
        client.reconnect_delay_set(0.2, 2)
        topic = self.device.topic

        def on_connect(c, _u, _flags, reason, _props) -> None:
            if reason.is_failure:
                self.last_error = f"broker refused the connection: {reason}"
                return
            self.last_error = None
            self.connected.set()
            c.subscribe(topic, qos=0)

        def on_disconnect(c, _u, _flags, reason, _props) -> None:
            self.connected.clear()
            self.suback.clear()
            c.abort_stream()
            model = self.device.timing
            if model is not None and self._client is c:  # the link dropped (not a restart): connect again
                self._pacer.spend(model.mqtt_connect())  # TCP, CONNECT and SUBSCRIBE in device time

        def on_connect_fail(_c, _u) -> None:
            self.last_error = "cannot connect to the broker"

        def on_socket_open(_c, _u, _sock) -> None:
            self.device.tcp_connected(self._ssl is not None)

        def on_subscribe(_c, _u, _mid, codes, _props) -> None:
            if codes and not codes[0].is_failure:
                self.suback.set()  # the device prints nothing of its own at the SUBACK
            else:
                self.last_error = f"the broker refused the subscription: {codes[0] if codes else '?'}"

        client.on_connect = on_connect
        client.on_socket_open = on_socket_open
        client.on_subscribe = on_subscribe
        client.on_disconnect = on_disconnect
        client.on_connect_fail = on_connect_fail
        host, port = self.link or (self.url.host, self.url.port)
        # published before paho's thread can connect: whoever sees `connected` set also sees this client
        self._client = client
        client.connect_async(host, port, self.keepalive)
        client.loop_start()

    def _disconnect(self) -> None:
        """Drop the connection as a device losing power does (no DISCONNECT); join paho's thread."""
        client, self._client = self._client, None
        if client is None:
            return
        paho_compat.end_network_loop(client)
        paho_compat.stop_reconnecting(client)
        sock = paho_compat.socket_of(client)
        if sock is not None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):  # teardown: a power cut must complete whatever paho's state
            client.loop_stop()
        with contextlib.suppress(Exception):  # teardown: as above
            paho_compat.close_socket(client)
        if client.abort_stream() is False and self.device.state is DeviceState.RECEIVING:
            self._update_done(self.device.on_message_abort())
        self.connected.clear()
        self.suback.clear()


def prepare_flash(
    path: str | os.PathLike[str],
    build: DeviceBuild,
    *,
    initial_image: bytes | None = None,
    partitions: bytes | None = None,
    flash_factory: Callable[..., FlashImage] = FlashImage,
) -> FlashImage:
    """Open the flash file (in ``build``'s layout); a new (or empty) one gets its first firmware in rom0.

    That is ``initial_image`` (e.g. Sming's real ``rom0.bin``) or else a demo image of the
    build's chip, app id and version; the build's ``firmware_timestamp`` (ms since 1900) is
    its build time (None: unknown, so the firmware takes any ``.ota``). ``partitions`` (a
    Sming ``partitions.bin``) is written at the layout's partition table address. Everything
    is checked before the file is made, and the file appears only complete (temp file + rename).
    ``flash_factory`` makes the flash (a fleet's boards keep theirs in memory).
    """
    from otalib.firmware.demo import make_demo_image
    from otalib.firmware.image import check_app_id, is_esp_image

    ver, app_id, layout = build.running_version, build.app_id, build.flash_layout
    build_timestamp = build.firmware_timestamp
    check_app_id(app_id)
    if initial_image is not None:
        image = bytes(initial_image)
        if not is_esp_image(image):
            raise UsageError("the initial firmware is not an ESP image (magic 0xE9 or 0xEA)")
    else:
        image = make_demo_image(build.chip.value, app_id, str(ver), build_timestamp=build_timestamp, patch=ver.patch)
    if len(image) > layout.slot_size:
        raise UsageError(f"the initial firmware ({len(image)} bytes) does not fit a {layout.slot_size}-byte slot")
    if partitions is not None and (layout.partition_table is None or len(partitions) > SECTOR):
        raise UsageError("this layout has no room for a partition table (or the table is over 4 KiB)")

    def initialise(flash: FlashImage) -> None:
        flash.write_slot(0, image)
        flash.write_boot_config(flash.default_boot_config())
        if partitions is not None and layout.partition_table is not None:
            flash.write(layout.partition_table, partitions)
        if initial_image is not None and build_timestamp is not None:
            flash.note_build_timestamp(0, build_timestamp, ver.patch)

    return flash_factory(path, layout, initialise=initialise)


class VirtualBoardProcess(BufferedConsole):
    """``otalab board ARGS…`` as a subprocess, read through its pty like a real board.

    ``args`` are the command's options (``--broker``, ``--flash``…; ``--flash`` is needed
    for :meth:`power_cycle` to keep the flash). :meth:`power_cycle` is ``kill -9`` and a
    new start; :meth:`reset` sends SIGUSR1.
    """

    def __init__(self, args: Sequence[str], *, name: str = "virtual-process", start_timeout: float = 20.0) -> None:
        self.name = name
        self.args = list(args)
        self.start_timeout = start_timeout
        self._console = ConsoleBuffer()
        self.proc: subprocess.Popen[str] | None = None
        self.serial: SerialBoard | None = None
        self.console_path: str | None = None
        self.status_line: str | None = None
        self._version: str | None = None
        self._pump: threading.Thread | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "otalib", "board", "--hold", *self.args]

    def start(self) -> VirtualBoardProcess:
        self.proc = procs.popen(
            self.command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        first = _readline(self.proc, self.start_timeout)
        if not first.startswith("console: "):
            err = self._stop_proc()
            raise BoardError(f"otalab board did not start: {(first or err).strip()[:300]}")
        self.console_path = first.split(":", 1)[1].strip()
        self.status_line = _readline(self.proc, self.start_timeout).strip()
        self.serial = SerialBoard(self.console_path, reset_via_rts=False)
        self._pump = threading.Thread(target=self._forward, args=(self.serial,), daemon=True)
        self._pump.start()
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")  # the monitor is attached: power on
        self.proc.stdin.flush()
        return self

    def _forward(self, serial: SerialBoard) -> None:
        cursor = 0
        while True:
            try:
                line, cursor = serial.line_at(cursor, None)
            except BoardError:
                return
            if line is None:
                return
            if line.event == "running":
                self._version = line.fields.get("version")
            self._console.push(line)

    def _stop_proc(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        err = proc.stderr.read() if proc.stderr else ""
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return err or ""

    def _close_serial(self) -> None:
        serial, self.serial = self.serial, None
        if serial is not None:
            serial.close()
        if self._pump is not None:
            self._pump.join(2)
            self._pump = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        self._stop_proc(signal.SIGTERM)
        self._close_serial()
        self._console.close()

    close = stop

    def __enter__(self) -> VirtualBoardProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        if self.proc is None:
            raise BoardError("the virtual board process is not running")
        self.proc.send_signal(signal.SIGUSR1)

    def power_cycle(self) -> None:
        """``kill -9`` (power loss: the flash file keeps what was written), then start again."""
        self._stop_proc(signal.SIGKILL)
        self._close_serial()
        self.start()

    def current_version(self) -> str | None:
        return self._version


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line of ``proc`` within ``timeout`` s ('' on timeout or exit)."""
    assert proc.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""
