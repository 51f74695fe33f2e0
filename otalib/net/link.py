"""A fault-injecting TCP link between a board and its broker.

The board connects to the proxy instead of the broker; the proxy forwards both
directions and can, at run time, make the link slow (rate limit), late (one-way
latency), or break it: cut it after N bytes, stall it, or flip one byte::

    with LinkProxy("127.0.0.1", broker.port, PROFILES["wifi"], Fault("cut", at_byte=100_000)) as link:
        board = ...  # connect the board to link.host:link.port (link.address)
        link.stats  # connections, bytes, faults fired, first/last byte times

Directions: *down* is broker -> board (where the firmware flows), *up* is
board -> broker. Fault offsets count DOWNSTREAM bytes:

- ``within="stream"`` (default): from the moment the fault is attached to a
  connection, i.e. from the first byte of the connection (CONNACK included) for
  a fault armed before the board connects;
- ``within="payload"``: from the first byte of the payload of the first MQTT
  PUBLISH that starts after the fault was attached (the proxy follows the MQTT
  framing, 3.1.1 or 5, to find it), so ``at_byte=0`` is the first byte of the
  deployment package.

A fault with ``once=True`` is attached to the next connection only: a reconnect
gets a clean link, like a transient Wi-Fi problem. What each fault does:

- ``cut``: forward exactly ``at_byte`` bytes, then close the board side (the
  board reads those bytes, then EOF) and reset the broker side (RST);
- ``stall``: forward ``at_byte`` bytes, then stop forwarding in both directions
  for ``duration_s`` (``None``: until :meth:`LinkProxy.resume`), keeping both
  connections open (data waits; TCP back-pressure reaches the sender);
- ``corrupt``: flip byte ``at_byte`` (XOR ``xor``, default 0xFF), forward the rest.

Rate limiting is a token bucket per direction shared by all connections (the
link is the bottleneck, not the connection); latency delays every chunk by
``latency_s`` in its own direction, keeping order and never blocking the other
direction. Everything runs on one asyncio loop in one background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from otalib.errors import BoardError, UsageError
from otalib.mqtt.wire import (
    MQTT5_LEVEL,
    MalformedPacket,
    PacketType,
    connect_level,
    parse_fixed_header,
    parse_publish_header,
    publish_qos,
)

FaultKind = Literal["none", "cut", "stall", "corrupt"]
FAULT_KINDS: tuple[str, ...] = ("none", "cut", "stall", "corrupt")

CHUNK = 4096  # bytes read at once from a socket
QUEUE_CHUNKS = 8  # chunks buffered per direction before back-pressure
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
STALL_POLL = 0.02
DELIVERY_POLL = 0.005  # how often the proxy looks whether the board's stack holds a payload's last byte
SIOCOUTQ = 0x5411  # Linux: bytes in a socket's send queue not yet acknowledged by the peer


@dataclass(frozen=True)
class LinkProfile:
    """How fast and how late the link is. ``rate_Bps=None`` means unlimited; latency is one-way."""

    rate_Bps: float | None = None
    latency_s: float = 0.0
    name: str = "lan"
    up_rate_Bps: float | None = None  # board -> broker; None = unlimited

    def __post_init__(self) -> None:
        for label, rate in (("rate", self.rate_Bps), ("upstream rate", self.up_rate_Bps)):
            if rate is not None and not (rate > 0 and math.isfinite(rate)):
                raise UsageError(f"bad link {label} {rate!r}: a positive number of bytes per second")
        if not (self.latency_s >= 0 and math.isfinite(self.latency_s)):
            raise UsageError(f"bad link latency {self.latency_s!r}: seconds, >= 0")


#: Named link profiles: ``wifi`` is a 50 KB/s Wi-Fi-like link with 20 ms one-way latency.
PROFILES: dict[str, LinkProfile] = {
    "lan": LinkProfile(None, 0.0, "lan"),
    "wifi": LinkProfile(50_000, 0.02, "wifi", up_rate_Bps=50_000),
    "slow": LinkProfile(10_000, 0.1, "slow", up_rate_Bps=10_000),
    "dsl": LinkProfile(250_000, 0.015, "dsl", up_rate_Bps=60_000),
}


@dataclass(frozen=True)
class Fault:
    """One fault on the downstream (broker -> board) bytes; see the module docstring for offsets."""

    kind: FaultKind = "none"
    at_byte: int = 0
    duration_s: float | None = None  # stall only; None = until resume()
    once: bool = True
    within: Literal["stream", "payload"] = "stream"
    xor: int = 0xFF  # corrupt only

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise UsageError(f"unknown link fault {self.kind!r} (use {', '.join(FAULT_KINDS)})")
        if self.at_byte < 0:
            raise UsageError(f"bad fault offset {self.at_byte}: must not be negative")
        if self.duration_s is not None and not (self.duration_s >= 0 and math.isfinite(self.duration_s)):
            raise UsageError(f"bad stall duration {self.duration_s!r}: seconds, >= 0")
        if self.within not in ("stream", "payload"):
            raise UsageError(f"bad fault base {self.within!r} (use stream or payload)")
        if not 0 < self.xor <= 0xFF:
            raise UsageError(f"bad corruption mask {self.xor!r}: 1..255")


# --- MQTT framing (observation only) ------------------------------------------------------------


class MqttFrameTracker:
    """Follows MQTT packets in one direction and records where each PUBLISH payload starts.

    Feed every byte in order; ``publishes`` holds ``(packet_start, payload_start, payload_len)``
    stream offsets. ``level`` is the MQTT protocol level (4 = 3.1.1, 5 = MQTT 5). A stream
    whose framing breaks (a remaining length over 4 bytes) is not followed further.
    """

    def __init__(self, level: int = 4) -> None:
        self.level = level
        self.pos = 0
        self.publishes: list[tuple[int, int, int]] = []
        self.lost = False
        self._head = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip or self.lost:
                step = n - i if self.lost else min(self._skip, n - i)
                self._skip -= 0 if self.lost else step
                i += step
                self.pos += step
                continue
            self._head.append(data[i])
            i += 1
            self.pos += 1
            try:
                total = self._parse_head()
            except MalformedPacket:
                self.lost = True
                total = None
            if total is not None:
                self._skip = max(0, total - len(self._head))
                self._head.clear()

    def _parse_head(self) -> int | None:
        """Total packet length once enough of the head is known (recording PUBLISHes), else None."""
        head = self._head
        fixed = parse_fixed_header(head)
        if fixed is None:
            return None
        if fixed.type != PacketType.PUBLISH:
            return fixed.total
        try:
            publish = parse_publish_header(
                head,
                publish_qos(fixed.first_byte),
                mqtt5=self.level >= MQTT5_LEVEL,
                remaining=fixed.remaining,
                start=fixed.size,
            )
        except MalformedPacket:
            return fixed.total  # a PUBLISH whose header does not fit: skipped, not recorded
        if publish is None:
            return None
        start = self.pos - len(head)
        payload = start + fixed.size + publish.size
        self.publishes.append((start, payload, fixed.remaining - publish.size))
        return fixed.total


# --- the proxy ----------------------------------------------------------------------------------


class _Bucket:
    """Token bucket pacing one direction; the rate is read from the proxy's profile at each use."""

    def __init__(self) -> None:
        self.tokens = 0.0
        self.last = time.monotonic()

    @staticmethod
    def piece(rate: float | None) -> int:
        return CHUNK if rate is None else int(max(512, min(CHUNK, rate / 50)))

    async def take(self, n: int, rate: float | None) -> None:
        now = time.monotonic()
        if rate is None:
            self.tokens, self.last = 0.0, now
            return
        burst = self.piece(rate)
        self.tokens = min(burst, self.tokens + (now - self.last) * rate)
        self.last = now
        if self.tokens < n:
            await asyncio.sleep((n - self.tokens) / rate)
            self.last = time.monotonic()
            self.tokens = n
        self.tokens -= n


@dataclass
class _Attached:
    """A fault attached to one connection; ``at`` becomes an absolute downstream offset once known."""

    fault: Fault
    base: int
    at: int | None = None
    fired: bool = False


@dataclass
class _Conn:
    number: int
    board_w: asyncio.StreamWriter
    up_w: asyncio.StreamWriter | None = None
    opened_t: float = field(default_factory=time.monotonic)
    closed_t: float | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    first_byte_t: float | None = None
    last_byte_t: float | None = None
    stall_until: float = 0.0
    faults: list[_Attached] = field(default_factory=list)
    tracker: MqttFrameTracker = field(default_factory=MqttFrameTracker)
    publish_times: list[list[float | None]] = field(default_factory=list)  # [first, last payload byte t]
    publish_delivered: list[float | None] = field(default_factory=list)  # last payload byte acknowledged t
    _pub_done: int = 0
    sniff: bytearray = field(default_factory=bytearray)
    ended: set[str] = field(default_factory=set)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closed: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "opened_t": self.opened_t,
            "closed_t": self.closed_t,
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "first_byte_t": self.first_byte_t,
            "last_byte_t": self.last_byte_t,
            "mqtt_level": self.tracker.level,
            "publishes": list(self.tracker.publishes),
            "publish_times": [tuple(times) for times in self.publish_times],
            "publish_delivered": list(self.publish_delivered),
        }

    def delivered(self) -> int:
        """Downstream bytes the board's TCP stack has acknowledged: those forwarded minus what still waits
        in the proxy's buffers (asyncio's and the kernel's send queue, unsent or unacknowledged). A drop
        loses the rest; the board holds these (read, or in its receive window)."""
        waiting = 0
        with contextlib.suppress(Exception):  # a closed transport: nothing waits any more
            waiting += self.board_w.transport.get_write_buffer_size()
        sock = self.board_w.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                waiting += struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]
        return max(0, self.bytes_down - waiting)

    def payload_delivered(self) -> int:
        """Payload bytes of the newest non-empty PUBLISH that the board's TCP stack holds (0 before any)."""
        publishes = [p for p in self.tracker.publishes if p[2] > 0]
        if not publishes:
            return 0
        _start, payload, length = publishes[-1]
        return min(length, max(0, self.delivered() - payload))

    def note_payload_progress(self, now: float) -> None:
        """Stamp when each PUBLISH payload's first and last byte went to the board."""
        publishes = self.tracker.publishes
        while len(self.publish_times) < len(publishes):
            self.publish_times.append([None, None])
        for index in range(self._pub_done, len(publishes)):
            _start, payload, length = publishes[index]
            times = self.publish_times[index]
            if times[0] is None and self.bytes_down >= payload + min(length, 1):
                times[0] = now
            if times[1] is None and self.bytes_down >= payload + length:
                times[1] = now
                while len(self.publish_delivered) <= index:
                    self.publish_delivered.append(None)
                self.tasks.append(asyncio.get_running_loop().create_task(self._stamp_delivery(index, payload + length)))
            if times[1] is None:
                break
            self._pub_done = index + 1

    async def _stamp_delivery(self, index: int, end: int) -> None:
        """Stamp when the board's stack acknowledged byte ``end`` (publish ``index``'s last payload byte)."""
        while not self.closed:
            if self.delivered() >= end:
                self.publish_delivered[index] = time.monotonic()
                return
            await asyncio.sleep(DELIVERY_POLL)


def _abort(writer: asyncio.StreamWriter | None, *, rst: bool) -> None:
    if writer is None:
        return
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


class LinkProxy:
    """A TCP proxy on ``127.0.0.1:PORT`` towards ``upstream``, with a link profile and faults.

    Use as a context manager (or ``start()``/``stop()``; both idempotent). Run-time controls
    (thread-safe): :meth:`set_profile`, :meth:`set_fault`, :meth:`cut_all`, :meth:`stall`,
    :meth:`resume`; :attr:`stats` reads the counters.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        profile: LinkProfile | None = None,
        fault: Fault | None = None,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.profile = profile or LinkProfile()
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.host = listen_host
        self.port = 0
        self._fault = fault if fault is not None and fault.kind != "none" else None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: list[_Conn] = []
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stall_until = 0.0
        self._buckets = {"down": _Bucket(), "up": _Bucket()}
        self._faults_fired: list[tuple[str, int, float]] = []
        self._stopped = False
        self._shutdown_event: asyncio.Event | None = None

    # -- lifecycle --

    @property
    def address(self) -> str:
        """``HOST:PORT`` the board connects to."""
        return f"{self.host}:{self.port}"

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LinkProxy({self.address} -> {self.upstream_host}:{self.upstream_port}, {self.profile.name})"

    def start(self) -> LinkProxy:
        """Listen and forward in a background thread; returns self once listening."""
        if self._thread is not None:
            return self
        if self._stopped:
            raise BoardError("link proxy already stopped; make a new one")
        self._thread = threading.Thread(target=self._run, name="otalab-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise BoardError("link proxy did not start in time")
        if self._start_error is not None:
            self.stop()
            raise BoardError(
                f"link proxy could not listen on {self.listen_host}:{self.listen_port}: {self._start_error}"
            )
        return self

    def stop(self) -> None:
        """Close every socket and join the thread (bounded). Idempotent."""
        self._stopped = True
        loop, thread = self._loop, self._thread
        event = self._shutdown_event
        if loop is not None and thread is not None and thread.is_alive():
            if event is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)
            thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._start_error = exc
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):  # teardown: the loop closes whatever happened
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._shutdown_event = shutdown = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], int(sockname[1])
        self._ready.set()
        try:
            await shutdown.wait()
        finally:
            self._server.close()
            for conn in list(self._conns):
                self._close(conn, rst=True)
            tasks = [t for c in self._conns for t in c.tasks if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            with contextlib.suppress(Exception):  # teardown: stop() must finish
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # -- run-time controls (any thread) --

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            fn(*args)  # not running: just record the setting
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(STOP_TIMEOUT)

    def set_profile(self, profile: LinkProfile) -> None:
        """Change rate and latency, also for open connections (from their next chunk)."""
        self.profile = profile

    def set_fault(self, fault: Fault | None, *, live: bool = False) -> None:
        """Arm ``fault`` for the next connection(s); with ``live=True`` also attach it to the open ones now."""
        fault = fault if fault is not None and fault.kind != "none" else None

        def apply() -> None:
            self._fault = fault
            if fault is not None and live:
                for conn in self._conns:
                    if not conn.closed:
                        conn.faults.append(_Attached(fault, conn.bytes_down))
                        if fault.once:
                            self._fault = None

        self._call(apply)

    def cut_all(self, *, abort: bool = False) -> list[int]:
        """Cut every open connection now: the broker side reset; the board side closed after the bytes already
        sent, or with ``abort`` reset too, losing what the link still held (a radio link that drops: the
        board keeps what its TCP stack had acknowledged, its receive window, and nothing the proxy or the
        kernel still held for it). Returns, per connection cut, the payload bytes of its newest PUBLISH
        the board held then; the fired faults record, with ``abort``, the stream bytes it held."""
        held: list[int] = []

        def apply() -> None:
            for conn in list(self._conns):
                if not conn.closed:
                    held.append(conn.payload_delivered())
                    self._fire(conn, "cut", conn.delivered() if abort else conn.bytes_down)
                    self._close(conn, rst=True, board_rst=abort)

        self._call(apply)
        return held

    def stall(self, seconds: float | None = None) -> None:
        """Stop forwarding on every connection for ``seconds`` (None: until :meth:`resume`)."""
        until = math.inf if seconds is None else time.monotonic() + seconds
        self._call(lambda: setattr(self, "_stall_until", until))

    def resume(self) -> None:
        """End every stall (run-time and fault stalls)."""

        def apply() -> None:
            self._stall_until = 0.0
            for conn in self._conns:
                conn.stall_until = 0.0

        self._call(apply)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: connections, bytes_down/up, faults_fired [(kind, offset, t)], first/last_byte_t, per connection.

        ``per_connection`` entries also hold ``publishes`` ([(packet start, payload start, payload length)],
        downstream offsets), ``publish_times`` ([(first, last payload byte forwarded)], monotonic) and
        ``publish_delivered`` ([when the board's stack acknowledged the last payload byte, or None]).
        """
        with self._lock:
            conns = [c.record() for c in self._conns]
            fired = list(self._faults_fired)
        firsts = [c["first_byte_t"] for c in conns if c["first_byte_t"] is not None]
        lasts = [c["last_byte_t"] for c in conns if c["last_byte_t"] is not None]
        return {
            "connections": len(conns),
            "open": sum(1 for c in conns if c["closed_t"] is None),
            "bytes_down": sum(c["bytes_down"] for c in conns),
            "bytes_up": sum(c["bytes_up"] for c in conns),
            "faults_fired": fired,
            "first_byte_t": min(firsts) if firsts else None,
            "last_byte_t": max(lasts) if lasts else None,
            "per_connection": conns,
        }

    # -- forwarding (loop thread) --

    async def _handle(self, board_r: asyncio.StreamReader, board_w: asyncio.StreamWriter) -> None:
        with self._lock:
            conn = _Conn(number=len(self._conns) + 1, board_w=board_w)
            self._conns.append(conn)
        if self._fault is not None:
            conn.faults.append(_Attached(self._fault, 0))
            if self._fault.once:
                self._fault = None
        conn.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), CONNECT_TIMEOUT
            )
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            # cancelled: the proxy stops while this board connects (Python 3.11's start_server callback
            # would log the CancelledError of a handler task as an unhandled exception)
            self._close(conn, rst=True)
            return
        conn.up_w = up_w
        if conn.closed:  # cut or stopped while connecting
            self._close(conn, rst=True)
            return
        for direction, reader, writer in (("down", up_r, board_w), ("up", board_r, up_w)):
            queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(QUEUE_CHUNKS)
            conn.tasks.append(asyncio.create_task(self._read(conn, reader, queue)))
            conn.tasks.append(asyncio.create_task(self._write(conn, direction, queue, writer)))

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader, queue: asyncio.Queue) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((time.monotonic(), data))
                if not data:
                    return
        except (OSError, asyncio.IncompleteReadError):
            await queue.put((time.monotonic(), None))

    async def _gate(self, conn: _Conn) -> None:
        while not conn.closed:
            wait = max(self._stall_until, conn.stall_until) - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, STALL_POLL))

    def _rate(self, direction: str) -> float | None:
        return self.profile.rate_Bps if direction == "down" else self.profile.up_rate_Bps

    async def _write(self, conn: _Conn, direction: str, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        try:
            while not conn.closed:
                arrived, data = await queue.get()
                if data is None:  # read error: the link is gone
                    self._close(conn, rst=True)
                    return
                due = arrived + self.profile.latency_s
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:  # EOF: pass the half-close on
                    await self._gate(conn)
                    with contextlib.suppress(OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    conn.ended.add(direction)
                    if len(conn.ended) == 2:
                        self._close(conn, rst=False)
                    return
                if direction == "down":
                    conn.tracker.feed(data)
                    await self._forward_down(conn, data, writer)
                else:
                    if len(conn.sniff) < 64 and conn.bytes_up < 64:
                        conn.sniff.extend(data[:64])
                        level = connect_level(bytes(conn.sniff))
                        if level is not None:
                            conn.tracker.level = level
                    await self._forward(conn, "up", data, writer)
        except (OSError, asyncio.CancelledError):
            if not conn.closed:
                self._close(conn, rst=True)

    async def _forward(self, conn: _Conn, direction: str, data: bytes, writer: asyncio.StreamWriter) -> None:
        view = memoryview(data)
        while view and not conn.closed:
            await self._gate(conn)
            rate = self._rate(direction)
            piece = view[: _Bucket.piece(rate)]
            await self._buckets[direction].take(len(piece), rate)
            await self._gate(conn)
            if conn.closed:
                return
            # counted before they are handed to the socket (write() may send at once, and the peer's
            # thread may read them before this one runs again): a peer that already read these bytes
            # never sees counters (bytes, first/last payload byte times) that lack them
            self._count(conn, direction, len(piece))
            writer.write(piece)
            view = view[len(piece) :]
            await writer.drain()

    def _count(self, conn: _Conn, direction: str, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            if direction == "down":
                conn.bytes_down += n
                if conn.first_byte_t is None:
                    conn.first_byte_t = now
                conn.last_byte_t = now
                conn.note_payload_progress(now)
            else:
                conn.bytes_up += n

    def _resolve(self, conn: _Conn) -> _Attached | None:
        """The next pending fault of ``conn`` with its absolute offset (if known yet)."""
        pending = None
        for att in conn.faults:
            if att.fired:
                continue
            if att.at is None:
                if att.fault.within == "stream":
                    att.at = att.base + att.fault.at_byte
                else:
                    start = next((p for s, p, _n in conn.tracker.publishes if s >= att.base), None)
                    if start is not None:
                        att.at = start + att.fault.at_byte
            if att.at is not None and (pending is None or att.at < (pending.at or 0)):
                pending = att
        return pending

    async def _forward_down(self, conn: _Conn, data: bytes, writer: asyncio.StreamWriter) -> None:
        buf = bytearray(data)
        while not conn.closed:
            att = self._resolve(conn)
            start = conn.bytes_down
            if att is not None and att.at is not None and att.at < start + len(buf):
                # Offsets are resolved before their byte passes (a payload offset as soon as its PUBLISH
                # header is fed, a stream offset from the bytes forwarded when attached); max() only guards.
                at = max(att.at, start)
                if att.fault.kind == "corrupt":
                    buf[at - start] ^= att.fault.xor
                    att.fired = True
                    self._fire(conn, "corrupt", at)
                    continue
                head = bytes(buf[: at - start])
                if head:
                    await self._forward(conn, "down", head, writer)
                    if conn.closed:
                        return
                del buf[: at - start]
                att.fired = True
                self._fire(conn, att.fault.kind, at)
                if att.fault.kind == "cut":
                    with contextlib.suppress(OSError, ConnectionError):
                        await asyncio.wait_for(writer.drain(), STOP_TIMEOUT)
                    self._close(conn, rst=True, board_rst=False)
                    return
                if att.fault.kind == "stall":
                    d = att.fault.duration_s
                    conn.stall_until = math.inf if d is None else time.monotonic() + d
                continue
            if buf:
                await self._forward(conn, "down", bytes(buf), writer)
            return

    def _fire(self, conn: _Conn, kind: str, offset: int) -> None:
        with self._lock:
            self._faults_fired.append((kind, offset, time.monotonic()))

    def _close(self, conn: _Conn, *, rst: bool, board_rst: bool | None = None) -> None:
        """Close both sides: the broker side reset if ``rst``, the board side gracefully unless ``board_rst``."""
        if conn.closed:
            return
        conn.closed = True
        with self._lock:
            conn.closed_t = time.monotonic()
        _abort(conn.up_w, rst=rst)
        _abort(conn.board_w, rst=bool(board_rst) if board_rst is not None else False)
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current and not task.done():
                task.cancel()
