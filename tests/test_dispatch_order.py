"""A backend's log line read together with a call's answer is relayed before that answer goes back
(`backends/watched.py`, `WatchedDispatcher`). Memory streams stand in for the transport here so that both
messages are surely read at once; the end-to-end case, a real stdio child writing both in one write, is in
tests/test_faults.py."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.shared.message import SessionMessage

from master_mcp.backends.watched import WatchedDispatcher

pytestmark = pytest.mark.anyio


class _Call:
    """A front call, as the connection sees its owner."""


async def _ignore_requests(*_: Any) -> None:
    raise AssertionError("no request is sent to the master in this test")


@pytest.mark.parametrize("method", ["notifications/message", "notifications/resources/updated"])
async def test_an_answer_waits_for_the_log_lines_received_before_it(method: str) -> None:
    call = _Call()
    inbox_in, inbox = anyio.create_memory_object_stream[SessionMessage | Exception](4)
    outbox, outbox_out = anyio.create_memory_object_stream[SessionMessage](4)
    dispatcher = WatchedDispatcher(inbox, outbox, lambda _sender: call)
    relayed: list[str] = []

    async def slow_relay(_dctx: Any, received: str, _params: Any) -> None:
        await anyio.sleep(0.3)  # a front stream that takes a moment
        relayed.append(received)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run, _ignore_requests, slow_relay)

            async def backend() -> None:
                request = (await outbox_out.receive()).message
                assert isinstance(request, types.JSONRPCRequest)
                params = {"level": "info", "data": "x"} if method == "notifications/message" else {"uri": "a://b"}
                await inbox_in.send(
                    SessionMessage(types.JSONRPCNotification(jsonrpc="2.0", method=method, params=params))
                )
                await inbox_in.send(SessionMessage(types.JSONRPCResponse(jsonrpc="2.0", id=request.id, result={})))

            tg.start_soon(backend)
            assert await dispatcher.send_raw_request("tools/call", {"name": "t"}) == {}
            answered = list(relayed)  # what had been relayed when the answer came
            await dispatcher.log_lines_relayed(call)
            waited = list(relayed)
            inbox_in.close()
    assert answered == []  # both were read at once: the answer came before the line was relayed
    # A log line belongs on the call's own stream, ahead of its answer; a resource update goes to others, and must
    # not hold the answer up.
    assert waited == ([method] if method == "notifications/message" else [])
