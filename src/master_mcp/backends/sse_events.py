"""Server-sent events read from a backend's response body, chunk by chunk, as the HTML standard defines them.

Only what MCP's streamable HTTP uses is kept of each event: its type, data, id and retry. An event larger than
the limit ends the stream with `EventTooLarge` rather than growing without bound.
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
    retry: int | None


class EventParser:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        # The line not yet ended, in pieces: joined once when it ends, so a long line costs its length once,
        # not once per chunk.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._after_cr = False
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the second half of a CRLF split across chunks
        self._after_cr = chunk.endswith(b"\r")
        pieces = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        events: list[Event] = []
        for piece in pieces[:-1]:
            self._pending.append(piece)
            line = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            event = self._line(line.decode("utf-8", errors="replace"))
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
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        # As the standard says: no data lines, no event (the id field still moved the last event id).
        event = Event(self._event or "message", "\n".join(self._data), self._id, self._retry) if self._data else None
        self._data, self._size, self._event, self._retry = [], 0, "", None
        return event
