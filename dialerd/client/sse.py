"""Server-Sent Events: a byte-level decoder and the resume/reconnect policy, free of any I/O.

Both clients feed raw chunks from the socket into ``EventStream`` and sleep for the delays it hands out;
it decides what a reconnect must send (``Last-Event-ID``), drops events already delivered, and gives up
after a bounded number of consecutive failed reconnects.
"""

from __future__ import annotations

from dataclasses import dataclass

from dialerd.client.errors import DialerdApiError, DialerdConnectionError
from dialerd.client.events import CampaignEvent, ContactEvent, End, Event, parse_event

DEFAULT_MAX_RECONNECTS = 5
DEFAULT_IDLE_TIMEOUT = 45.0  # three missed 15 s heartbeats: the connection is dead
DEFAULT_RECONNECT_DELAY = 1.0
MAX_RECONNECT_DELAY = 30.0


@dataclass(frozen=True)
class Frame:
    """One dispatched SSE message. ``id`` is the stream's last event id when it was dispatched."""

    event: str | None
    data: str
    id: str | None


class SseDecoder:
    """Incremental decoder following the WHATWG ``text/event-stream`` rules (any line ending)."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._buffer = b""
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Frame]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        frames: list[Frame] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return frames
            end, after = cut
            if after == len(self._buffer) and self._buffer[end : end + 1] == b"\r":
                self._skip_lf = True  # CR at the very end: an LF may follow in the next chunk
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[after:]
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)

    def _line(self, line: str) -> Frame | None:
        if line == "":
            if not self._data:
                self._event = None
                return None
            frame = Frame(self._event, "\n".join(self._data), self.last_event_id)
            self._event, self._data = None, []
            return frame
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line ends and where the next starts, or None without a full line."""
    cr, lf = buffer.find(b"\r"), buffer.find(b"\n")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, lf + 1
    if buffer[cr + 1 : cr + 2] == b"\n":
        return cr, cr + 2
    return cr, cr + 1


class EventStream:
    """The state of one logical subscription across reconnects."""

    def __init__(
        self,
        campaign_id: str,
        last_event_id: int | None,
        *,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        reconnect_delay: float | None = None,
    ) -> None:
        if max_reconnects < 0:
            raise ValueError("max_reconnects must be >= 0")
        self.campaign_id = campaign_id
        self.last_event_id: str | None = None if last_event_id is None else str(int(last_event_id))
        self.max_reconnects = max_reconnects
        self.reconnect_delay = reconnect_delay
        self.ended = False
        self.connected_once = False
        self.failures = 0  # consecutive reconnects without a single message in between
        self._retry_hint: float | None = None
        # Deduplication floor: transitions at or below it were delivered (or skipped by request) already.
        self._delivered = -1 if last_event_id is None else int(last_event_id)
        self._decoder = SseDecoder(self.last_event_id)

    def request_headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def connected(self) -> None:
        """A connection answered 200: start decoding afresh (a half-received frame is lost and resent)."""
        self.connected_once = True
        self._decoder = SseDecoder(self.last_event_id)

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk``; nothing once ``End`` was delivered."""
        out: list[Event] = []
        if self.ended:
            return out
        for frame in self._decoder.feed(chunk):
            self.failures = 0
            if frame.id is not None:
                self.last_event_id = frame.id
            event = parse_event(frame.event, frame.data, frame.id)
            if isinstance(event, ContactEvent | CampaignEvent):
                if event.id <= self._delivered:
                    continue
                self._delivered = event.id
            out.append(event)
            if isinstance(event, End):
                self.ended = True
                break
        if self._decoder.retry_ms is not None:
            self._retry_hint = self._decoder.retry_ms / 1000
        return out

    def lost(self, cause: BaseException | None) -> float:
        """The connection ended before ``end``: the delay before reconnecting, or raise when giving up.

        The first connection is not retried (a wrong URL or key should fail fast); an API error other
        than a 5xx is final whenever it comes.
        """
        if isinstance(cause, DialerdApiError) and (cause.status < 500 or not self.connected_once):
            raise cause
        if not self.connected_once:
            if isinstance(cause, DialerdConnectionError):
                raise cause
            raise DialerdConnectionError(f"cannot open the event stream of {self.campaign_id}: {cause}") from cause
        self.failures += 1
        if self.failures > self.max_reconnects:
            what = "the connection closed" if cause is None else str(cause)
            raise DialerdConnectionError(
                f"event stream of {self.campaign_id} lost and {self.max_reconnects} reconnects failed "
                f"(last: {what})"
            ) from cause
        base = (
            self.reconnect_delay
            if self.reconnect_delay is not None
            else (self._retry_hint if self._retry_hint is not None else DEFAULT_RECONNECT_DELAY)
        )
        return float(min(MAX_RECONNECT_DELAY, base * 2 ** (self.failures - 1)))
