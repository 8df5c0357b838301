"""Resumable SSE streams for the conformance backend (SEP-1699): a bounded in-memory record of what each stream
sent. Test-only: its stream ids are the SDK's, which are not bound to a session, so one store must never be shared
by the sessions of different users."""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

DEFAULT_MAX_EVENTS = 10_000


class MemoryEventStore(EventStore):
    """Keeps the last `max_events` events over all streams; older ones (and their streams) are forgotten."""

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self._max = max_events
        self._counter = itertools.count(1)
        self._streams: OrderedDict[StreamId, deque[tuple[int, JSONRPCMessage | None]]] = OrderedDict()
        self._size = 0

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        number = next(self._counter)
        self._streams.setdefault(stream_id, deque()).append((number, message))
        self._streams.move_to_end(stream_id)
        self._size += 1
        while self._size > self._max and self._streams:
            oldest, events = next(iter(self._streams.items()))
            events.popleft()
            self._size -= 1
            if not events:
                del self._streams[oldest]
        return f"{stream_id}/{number}"

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        stream_id, _, number = last_event_id.rpartition("/")
        events = self._streams.get(stream_id)
        if events is None or not number.isdigit():
            return None
        after = int(number)
        for event_number, message in list(events):
            if event_number > after and message is not None:
                await send_callback(EventMessage(message, f"{stream_id}/{event_number}"))
        return stream_id
