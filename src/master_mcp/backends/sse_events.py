"""Server-sent events read from a backend's response body, chunk by chunk, as the HTML standard defines them.

Only what MCP's streamable HTTP uses is kept: each event's type and data, and on the parser the last event id
and the reconnection delay, which the standard applies as soon as their fields are read (an `id:` or `retry:`
block without data still counts). An event larger than the limit ends the stream with `EventTooLarge` rather
than growing without bound.
"""

from __future__ import annotations

from dataclasses import dataclass


class EventTooLarge(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: str
    id: str | None


class EventParser:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        # The line not yet ended, in pieces: joined once when it ends, so a long line costs its length once,
        # not once per chunk.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._after_cr = False
        self._first_line = True
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the second half of a CRLF split across chunks
        self._after_cr = chunk.endswith(b"\r")
        pieces = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        events: list[Event] = []
        for piece in pieces[:-1]:
            self._pending.append(piece)
            line = b"".join(self._pending).decode("utf-8", errors="replace")
            self._pending, self._pending_size = [], 0
            if self._first_line:
                line = line.removeprefix("\ufeff")  # a byte order mark may open the stream
                self._first_line = False
            event = self._line(line)
            if event is not None:
                events.append(event)
        if pieces[-1]:
            self._pending.append(pieces[-1])
            self._pending_size += len(pieces[-1])
        if self._pending_size + self._size > self._limit:
            raise EventTooLarge(f"an event of more than {self._limit} bytes")
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._size += len(value) + 1
            if self._size > self._limit:
                raise EventTooLarge(f"an event of more than {self._limit} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        # As the standard says: no data lines, no event.
        event = Event(self._event or "message", "\n".join(self._data), self.last_id) if self._data else None
        self._data, self._size, self._event = [], 0, ""
        return event
