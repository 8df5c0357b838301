"""Malformed JSON-RPC and oversized bodies at the HTTP front: never a crash, never a 5xx without a JSON-RPC error.

A generator builds POST bodies and header sets: raw junk, broken JSON, wrong types in every envelope field, batches,
posted responses, unknown methods, valid-looking requests with bad params, huge strings and deep nesting. It is a
hypothesis strategy (its random choices are drawn by hypothesis, derandomized so every run sends the same few
thousand cases, and a failing batch shrinks to a small one). The cases go to one real master through four doors:
no session (legacy era), a live legacy session, a forged session id, and the 2026-07-28 per-request envelope
(headers agreeing with the body, so the requests reach the master's handlers). Afterwards an SDK client must still
be served and the master must still be ready. Bodies over the 4 MiB limit, declared or streamed, must be refused
with 413 at once.
"""

from __future__ import annotations

import copy
import json
import random
import re
import string
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.server.streamable_http import check_accept_headers
from starlette.requests import Request

from master_mcp.front_modern import InlineModern
from master_mcp.server import MasterServer
from tests.conftest import make_config, serve_master, stdio_server

pytestmark = pytest.mark.anyio

EXAMPLES = 300  # hypothesis examples, each a batch of 8 to 12 cases: about 3000 cases in all
BATCH = (8, 12)
CASE_TIMEOUT_S = 10.0
# A batch goes out in lanes side by side, each lane in order and on its own legacy session.
LANES = 8
ACCEPT = "application/json, text/event-stream"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ENVELOPE: dict[str, Any] = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "fuzz", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
SESSION = "<the live session>"  # replaced by the id of the live legacy session when the case is sent
BODY_LIMIT = 4 * 1024 * 1024  # the SDK's default request body limit, which the master keeps

# Valid requests (and notifications) of every method the master serves, to be broken by the mutations below.
TEMPLATES: dict[str, dict[str, Any] | None] = {
    "initialize": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "0"}},
    "ping": None,
    "tools/list": {},
    "tools/call": {"name": "one__echo", "arguments": {"text": "fuzz"}},
    "resources/list": {"cursor": "0"},
    "resources/templates/list": {},
    "resources/read": {"uri": "one+fixture://item/7"},
    "resources/subscribe": {"uri": "one+fixture://static"},
    "resources/unsubscribe": {"uri": "one+fixture://static"},
    "prompts/list": {},
    "prompts/get": {"name": "one__greet", "arguments": {"name": "Ada"}},
    "completion/complete": {
        "ref": {"type": "ref/prompt", "name": "one__greet"},
        "argument": {"name": "name", "value": "al"},
    },
    "logging/setLevel": {"level": "warning"},
}
NOTIFICATIONS: dict[str, dict[str, Any] | None] = {
    "notifications/initialized": None,
    "notifications/cancelled": {"requestId": 1, "reason": "fuzz"},
    "notifications/progress": {"progressToken": "t", "progress": 1},
    "notifications/roots/list_changed": {},
}
# Fixture tools that are quick and harmless; the others sleep, exit, change the catalog or ask the client back.
TOOLS = [
    "one__echo",
    "one__add",
    "one__search",
    "one__fail",
    "one__links",
    "one__show_meta",
    "one__request_counts",
    "one__regional",  # its schema declares a header (`x-mcp-header`): the 2026-07-28 header checks apply to it
]
NAMES = [*TOOLS, "one__greet", "nope__echo", "one__", "__echo", "one", "", "one__echo\u0000", "ONE__ECHO"]
URIS = ["one+fixture://static", "one+fixture://item/1", "one+fixture://item/", "fixture://static", "zzz://x", ""]
# Never produced: a tool that sleeps, exits, registers tools or waits for the client, or an endless listen stream.
UNSAFE = (b"one__slow", b"one__crash", b"one__ask_", b"one__client_roots", b"one__add_tool_later", b"listen")
CURSORS = ["0", "1", "-1", "99999", "x", "", " 1", "1.5", "\u00b2", "\u0663", "9" * 5000, "0" * 100]
JSON_JUNK = [
    b"",
    b" ",
    b"\n\t ",
    b"null",
    b"true",
    b"0",
    b"-0",
    b"1e999999",
    b"9" * 5000,
    b"NaN",
    b"-Infinity",
    b'"just a string"',
    b"[]",
    b"{}",
    b"[{}]",
    b"[[]]",
    b"{",
    b"}",
    b'{"jsonrpc"',
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"',
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"} {"jsonrpc": "2.0", "id": 2, "method": "ping"}',
    b'{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "ping", "method": "tools/list"}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "\\ud800"}',
    b'{"jsonrpc": "2.0", "id": "\\udfff\\ud800", "method": "ping"}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping\\u0000"}',
    b'\xef\xbb\xbf{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "p\xffng"}',
    b"\xff\xfe\x00\x00",
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": {"progressToken": 1e400}}}',
    b'{"jsonrpc": "2.0", "id": 1e400, "method": "ping"}',
    b'{"jsonrpc": "2.0", "id": 123456789012345678901234567890, "method": "ping"}',
]
CONTENT_TYPES = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "application/json; charset=latin-1",
    "APPLICATION/JSON",
    "application/json-seq",
    "",
]
ACCEPTS = [None, "application/json", "text/event-stream", "*/*", "text/html", "", "application/json;q=0"]
VERSIONS = ["", "garbage", "2024-11-05", "2025-03-26", "2025-06-18", LEGACY, MODERN, "2999-01-01", "x" * 4000]


@dataclass
class Case:
    door: str  # "fresh" (no session), "session" (a live legacy session), "forged" (unknown session id), "modern"
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"...(%d bytes)" % len(self.body)
        headers = [(k, v if len(v) <= 80 else v[:80] + "...") for k, v in self.headers]
        return f"case ({self.door}) headers={headers} body={body!r}"


# ---- the generator -------------------------------------------------------------------------------------------------


def random_text(rng: random.Random, size: int | None = None) -> str:
    size = rng.choice([0, 1, 3, 8, 40, 300]) if size is None else size
    alphabet = rng.choice(
        [
            string.ascii_letters + string.digits + "_/-.:+",
            string.printable,
            "\u0000\u0001\u001f\u007f\u00ff\u2028\u2029\ufeff\ufffd\u202e",
            "abc\u00e9\u4e2d\U0001f600",
        ]
    )
    return "".join(rng.choice(alphabet) for _ in range(size))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "bool", "int", "float", "text", "list", "object"] if depth < 3 else ["null", "int", "text"]
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e308, -1e-308, 1.0, float("nan"), float("inf"), float("-inf")])
    if kind == "text":
        return random_text(rng)
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_text(rng, rng.randint(0, 8)): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def nested(rng: random.Random, depth: int) -> str:
    """A stand-in for a deeply nested value, spliced in as text by `encode` (Python cannot copy or dump it)."""
    return f"@@deep:{depth}:{rng.choice('lo')}@@"


def splice_nesting(raw: bytes) -> bytes:
    for marker in re.findall(rb'"@@deep:(\d+):([lo])@@"', raw):
        depth, kind = int(marker[0]), marker[1]
        opener, closer = (b"[", b"]") if kind == b"l" else (b'{"a":', b"}")
        raw = raw.replace(b'"@@deep:%s:%s@@"' % marker, opener * depth + b"1" + closer * depth, 1)
    return raw


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a JSON value (dict keys and list indexes) that a mutation can replace or delete."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def replace(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


def delete(document: Any, path: tuple[Any, ...]) -> None:
    for key in path[:-1]:
        document = document[key]
    del document[path[-1]]


def template(rng: random.Random, modern: bool) -> dict[str, Any]:
    if rng.random() < 0.15:
        method, params = rng.choice(list(NOTIFICATIONS.items()))
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    else:
        method, params = rng.choice(list(TEMPLATES.items()))
        message = {"jsonrpc": "2.0", "id": rng.choice([1, 2, 77, "a", "req-1", 0]), "method": method}
    params = copy.deepcopy(params)
    if method == "tools/call" and params is not None:
        params["name"] = rng.choice(TOOLS)
        arguments = [{"text": "x"}, {"a": 1, "b": 2}, {"query": "q"}, {"reason": "r"}, {"region": "eu"}, {}]
        params["arguments"] = rng.choice(arguments)
    if modern:
        params = {**(params or {}), "_meta": copy.deepcopy(ENVELOPE)}
    if params is not None:
        message["params"] = params
    return message


# Envelope mutations (0-4, 10, 11) are mostly refused before any handler runs; params mutations reach handlers.
MUTATION_WEIGHTS = [1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 1, 1, 3, 1, 1]


def mutate(rng: random.Random, message: dict[str, Any]) -> Any:
    """One structural mutation of a valid message; the result may be any JSON value."""
    op = rng.choices(range(15), weights=MUTATION_WEIGHTS)[0]
    params = message.get("params")
    if op == 0:
        message["jsonrpc"] = rng.choice(["1.0", "2", 2.0, None, "", "2.0 ", random_value(rng)])
    elif op == 1:
        message["id"] = rng.choice([None, 1.5, True, [], {}, "", -1, 2**70, "x" * 10_000, random_value(rng)])
    elif op == 2:
        message.pop(rng.choice(["jsonrpc", "id", "method", "params"]), None)
    elif op == 3:
        message["method"] = rng.choice(
            ["", "nope", "tools/", "/tools/call", "TOOLS/LIST", "rpc.discover", "$/cancelRequest", random_value(rng)]
        )
    elif op == 4:
        message["params"] = rng.choice([[], [1, 2], "params", 0, None, True, random_value(rng)])
    elif op in (5, 6, 7) and isinstance(params, dict) and (places := paths(params)):
        place = rng.choice(places)
        if op == 7:
            delete(params, place)
        else:
            replace(params, place, random_value(rng))
    elif op == 8 and isinstance(params, dict):
        key = rng.choice(["name", "uri", "cursor", "arguments", "level", "ref", "argument", "_meta", "task"])
        pool: list[Any] = {"name": NAMES, "uri": URIS, "cursor": CURSORS}.get(key, [])
        params[key] = rng.choice(pool) if pool and rng.random() < 0.7 else random_value(rng)
    elif op == 9:
        target = params if isinstance(params, dict) and rng.random() < 0.5 else message
        target[random_text(rng, rng.randint(1, 10))] = random_value(rng)
    elif op == 10:
        message.pop("method", None)
        message.setdefault("id", 1)
        if rng.random() < 0.5:
            message["result"] = random_value(rng)
        else:
            message["error"] = rng.choice([{"code": -32600, "message": "x"}, {"code": "x"}, random_value(rng)])
    elif op == 11:
        return rng.choice([[message], [message, copy.deepcopy(message)], [message, 1], [[message]]])
    elif op == 12 and isinstance(params, dict):
        meta = params.setdefault("_meta", {})
        if isinstance(meta, dict):
            meta[rng.choice(["progressToken", *ENVELOPE])] = random_value(rng)
        else:
            params["_meta"] = random_value(rng)
    elif op == 13:
        size = rng.choice([64 * 1024, 512 * 1024]) if rng.random() < 0.9 else BODY_LIMIT - 64 * 1024
        text = "x" * size
        if isinstance(params, dict) and message.get("method") == "tools/call":
            params["arguments"] = {"text": text}
        else:
            message[rng.choice(["method", "id", "extra"])] = text
    elif op == 14:
        # ~200-250 is covered by its own test at the end (deeper than a stdio backend's parser takes).
        depth = rng.choice([20, 150, 300, 600, 950, 5000])
        if isinstance(params, dict):
            params[rng.choice(["arguments", "_meta", "cursor", "extra"])] = nested(rng, depth)
        else:
            message["params"] = nested(rng, depth)
    return message


def encode(rng: random.Random, document: Any) -> bytes:
    raw = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    raw = splice_nesting(raw)
    if rng.random() >= 0.15 or not raw:
        return raw
    op = rng.randrange(6)
    at = rng.randrange(len(raw))
    if op == 0:
        return raw[:at]  # truncated
    if op == 1:
        return raw[:at] + bytes([rng.randrange(256)]) + raw[at + 1 :]  # one byte flipped
    if op == 2:
        return raw[:at] + rng.randbytes(rng.randint(1, 8)) + raw[at:]  # garbage inserted
    if op == 3:
        return raw + rng.choice([b",", b"]", b"}", b"\x00", b" trailing", raw])
    if op == 4:
        return raw.decode("utf-8", "surrogatepass").encode("utf-16")  # not UTF-8 at all
    return raw.replace(b'"', b"'")  # Python-style quotes


def raw_junk(rng: random.Random) -> bytes:
    op = rng.randrange(4)
    if op == 0:
        return rng.choice(JSON_JUNK)
    if op == 1:
        return rng.randbytes(rng.choice([1, 7, 64, 1024]))
    if op == 2:
        depth = rng.choice([100, 1000, 10_000, 200_000])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return opener * depth + b"1" + closer * depth * rng.randint(0, 1)
    return random_text(rng, rng.randint(1, 200)).encode("utf-8", "surrogatepass")


def routing_headers(body: bytes) -> list[tuple[str, str]]:
    """The 2026-07-28 headers that agree with the body, where the body has what they mirror."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(document, dict):
        return []
    method = document.get("method")
    params = document.get("params")
    name = params.get("uri" if method == "resources/read" else "name") if isinstance(params, dict) else None
    # Header values stay printable ASCII and short: uvicorn refuses request heads over 64 KiB before any app runs.
    mirrored = [("mcp-method", method), ("mcp-name", name)]
    return [(k, v) for k, v in mirrored if isinstance(v, str) and v.isascii() and v.isprintable() and len(v) < 4096]


def header_noise(rng: random.Random, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    op = rng.randrange(6)
    if op == 0:
        headers = [(k, v) for k, v in headers if k != "content-type"]
        if (content_type := rng.choice(CONTENT_TYPES)) is not None:
            headers.append(("content-type", content_type))
    elif op == 1:
        headers = [(k, v) for k, v in headers if k != "accept"]
        if (accept := rng.choice(ACCEPTS)) is not None:
            headers.append(("accept", accept))
    elif op == 2:
        headers = [(k, v) for k, v in headers if k != "mcp-protocol-version"]
        headers.append(("mcp-protocol-version", rng.choice(VERSIONS)))
    elif op == 3 and headers:
        headers.append(rng.choice(headers))  # a header twice
    elif op == 4:
        headers.append((rng.choice(["mcp-method", "mcp-name", "last-event-id"]), random_text(rng, 8).strip()))
    else:
        name = "mcp-param-" + rng.choice(["text", "a", "x", "region", "Region"])
        headers.append((name, rng.choice(["1", "=?base64?!!?=", "", "eu"])))
    return [(k, v) for k, v in headers if v.isascii() and v.isprintable()]


def make_case(rng: random.Random) -> Case:
    door = rng.choices(["fresh", "session", "forged", "modern"], weights=[25, 35, 10, 30])[0]
    if rng.random() < 0.12:
        body = raw_junk(rng)
    else:
        document: Any = template(rng, modern=door == "modern")
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            if not isinstance(document, dict):
                break
            document = mutate(rng, document)
        body = encode(rng, document)
    if any(word in body for word in UNSAFE):
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
    headers = [("accept", ACCEPT), ("content-type", "application/json")]
    if door == "modern":
        headers += [("mcp-protocol-version", MODERN), *routing_headers(body)]
    elif door == "session":
        headers += [("mcp-session-id", SESSION), ("mcp-protocol-version", LEGACY)]
    elif door == "forged":
        forged = rng.choice(["0" * 32, "ab" * 16, "not-a-session", "x" * 5000, "-1", "../../etc/passwd"])
        headers.append(("mcp-session-id", forged))
    if rng.random() < 0.15:
        headers = header_noise(rng, headers)
    return Case(door, body, headers)


# The generator above draws every choice from `rng`. Hypothesis's own Random makes those draws its data (so a
# failing case shrinks) but leans them toward the edges, which sends most cases down the rarer paths (junk bodies,
# noisy headers); a plain Random seeded by hypothesis keeps the weights above, so as many reach the handlers.
CASE = st.one_of(st.randoms(use_true_random=False), st.randoms(use_true_random=True)).map(make_case)


# ---- sending and judging -------------------------------------------------------------------------------------------


def is_jsonrpc_error(content_type: str, body: bytes) -> bool:
    """Whether a body is (or, for an event stream, carries) a JSON-RPC error object."""
    documents = [body]
    if content_type.startswith("text/event-stream"):
        documents = [line[5:] for line in body.splitlines() if line.startswith(b"data:")]
    for raw in documents:
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        error = doc.get("error")
        if doc.get("jsonrpc") == "2.0" and "id" in doc and isinstance(error, dict):
            if isinstance(error.get("code"), int) and isinstance(error.get("message"), str):
                return True
    return False


@dataclass
class Outcome:
    status: int
    content_type: str
    body: bytes
    session_id: str | None


async def post(
    http: httpx2.AsyncClient, url: str, headers: list[tuple[str, str]], body: bytes | AsyncIterator[bytes]
) -> Outcome:
    with anyio.fail_after(CASE_TIMEOUT_S):
        async with http.stream("POST", url, headers=headers, content=body) as response:
            content = await response.aread()
    return Outcome(
        response.status_code, response.headers.get("content-type", ""), content, response.headers.get("mcp-session-id")
    )


async def open_session(http: httpx2.AsyncClient, url: str) -> str:
    """A legacy session opened by hand (initialize, then notifications/initialized), as the SDK client does."""
    hello = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": TEMPLATES["initialize"]}
    headers = [("accept", ACCEPT), ("content-type", "application/json")]
    opened = await post(http, url, headers, json.dumps(hello).encode())
    assert opened.status == 200 and opened.session_id, opened
    session = [*headers, ("mcp-session-id", opened.session_id), ("mcp-protocol-version", LEGACY)]
    ready = await post(http, url, session, b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert ready.status == 202, ready
    return opened.session_id


async def close_session(http: httpx2.AsyncClient, url: str, session_id: str) -> None:
    headers = {"mcp-session-id": session_id, "mcp-protocol-version": LEGACY}
    with anyio.fail_after(CASE_TIMEOUT_S):
        await http.delete(url, headers=headers)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def front() -> AsyncIterator[tuple[MasterServer, str]]:
    """One master for the module: every test leaves it as it found it, serving."""
    async with serve_master(make_config(stdio_server("one"))) as (master, url):
        yield master, url


async def still_serving(master: MasterServer, url: str) -> list[str]:
    """What is wrong with the master now, if anything: an SDK client of each era must be served, and it is ready."""
    problems: list[str] = []
    for mode in ("legacy", MODERN):
        try:
            with anyio.fail_after(30):
                async with Client(url, mode=mode) as client:
                    result = await client.call_tool("one__echo", {"text": "alive"})
            block = result.content[0]
            if not isinstance(block, types.TextContent) or block.text != "alive":
                problems.append(f"{mode} client: echo answered {result!r}")
        except Exception as exc:
            problems.append(f"{mode} client: {type(exc).__name__}: {exc}")
    ready, servers = master.readiness()
    if not ready:
        problems.append(f"master not ready afterwards: {servers}")
    return problems


@dataclass
class Lane:
    """A legacy session that a lane's "session" cases go out on, kept from batch to batch (reopened if lost)."""

    session_id: str
    last_session_case: Case | None = None


@dataclass
class Fuzzer:
    http: httpx2.AsyncClient
    url: str
    lanes: list[Lane]
    seen: Counter[tuple[str, int]] = field(default_factory=Counter)


@pytest.fixture(scope="module")
async def fuzzer(front: tuple[MasterServer, str]) -> AsyncIterator[Fuzzer]:
    _, url = front
    async with httpx2.AsyncClient(timeout=CASE_TIMEOUT_S) as http:
        fuzzer = Fuzzer(http, url, [Lane(await open_session(http, url)) for _ in range(LANES)])
        yield fuzzer
        for lane in fuzzer.lanes:
            await close_session(http, url, lane.session_id)
    print(f"{fuzzer.seen.total()} cases; (door, status): count {sorted(fuzzer.seen.items())}")


async def run_lane(fuzzer: Fuzzer, lane: Lane, cases: list[Case], failures: list[str]) -> None:
    """Send `cases` one after the other, each "session" case on this lane's own live legacy session."""
    http, url = fuzzer.http, fuzzer.url
    for case in cases:
        headers = [(k, lane.session_id if v == SESSION else v) for k, v in case.headers]
        try:
            outcome = await post(http, url, headers, case.body)
        except TimeoutError:
            failures.append(f"no answer within {CASE_TIMEOUT_S}s: {case.describe()}")
            continue
        except httpx2.HTTPError as exc:
            failures.append(f"{type(exc).__name__} {exc}: {case.describe()}")
            continue
        fuzzer.seen[case.door, outcome.status] += 1
        if outcome.status >= 500 and not is_jsonrpc_error(outcome.content_type, outcome.body):
            answer = f"{outcome.status} {outcome.content_type!r} {outcome.body[:300]!r}"
            failures.append(f"{answer} without a JSON-RPC error: {case.describe()}")
        if case.door == "session" and outcome.status == 404 and b"Session not found" in outcome.body:
            # The live session is gone: the session case before this one ended it. Say so, then go on.
            culprit = lane.last_session_case.describe() if lane.last_session_case else "the opening"
            failures.append(f"the live session was lost after {culprit}")
            lane.session_id = await open_session(http, url)
        if case.door == "session":
            lane.last_session_case = case
        if outcome.status < 300 and outcome.session_id not in (None, lane.session_id):
            await close_session(http, url, outcome.session_id)  # a fuzzed initialize opened a session


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(CASE, min_size=BATCH[0], max_size=BATCH[1]))
async def test_malformed_posts_get_answers_not_crashes(fuzzer: Fuzzer, batch: list[Case]) -> None:
    failures: list[str] = []
    async with anyio.create_task_group() as tg:
        for index, lane in enumerate(fuzzer.lanes):
            tg.start_soon(run_lane, fuzzer, lane, batch[index::LANES], failures)
    assert not failures, f"{len(failures)} problems:\n" + "\n".join(failures[:20])


async def test_the_master_serves_after_the_fuzz(front: tuple[MasterServer, str], fuzzer: Fuzzer) -> None:
    assert fuzzer.seen.total() >= 2000  # a few thousand cases went out before this
    assert not await still_serving(*front)


async def stream(size: int) -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    for _ in range(size // len(chunk) + 1):
        yield chunk


@pytest.mark.parametrize("door", ["fresh", "modern"])
@pytest.mark.parametrize("size", [BODY_LIMIT + 1, 5 * 1024 * 1024])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_oversized_bodies_are_refused_quickly(
    front: tuple[MasterServer, str], door: str, size: int, declared: bool
) -> None:
    master, url = front
    headers = [("accept", ACCEPT), ("content-type", "application/json")]
    if door == "modern":
        headers += [("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", "one__echo")]
    prefix = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "one__echo", "arguments": '
    prefix += b'{"text": "'
    body = prefix + b"x" * (size - len(prefix) - 4) + b'"}}}'
    assert len(body) == size
    started = time.monotonic()
    async with httpx2.AsyncClient(timeout=CASE_TIMEOUT_S) as http:
        content: bytes | AsyncIterator[bytes] = body if declared else stream(size)
        outcome = await post(http, url, headers, content)
    assert outcome.status == 413, outcome
    assert time.monotonic() - started < 5
    assert not await still_serving(master, url)


async def test_nesting_deeper_than_backends_parse_is_refused_at_once(front: tuple[MasterServer, str]) -> None:
    _, url = front
    deep = "[" * 220 + "1" + "]" * 220
    body = '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "one__echo", "arguments": '
    body += f'{{"text": "x", "deep": {deep}}}, "_meta": {json.dumps(ENVELOPE)}}}}}'
    headers = [("accept", ACCEPT), ("content-type", "application/json"), ("mcp-protocol-version", MODERN)]
    headers += [("mcp-method", "tools/call"), ("mcp-name", "one__echo")]
    async with httpx2.AsyncClient(timeout=CASE_TIMEOUT_S) as http:
        with anyio.fail_after(5):  # a healthy answer, result or error, takes milliseconds
            outcome = await post(http, url, headers, body.encode())
    assert outcome.status < 500 or is_jsonrpc_error(outcome.content_type, outcome.body)
    assert is_jsonrpc_error(outcome.content_type, outcome.body) and b"nest deeper than" in outcome.body


# ---- the master's own 2026-07-28 entry against the SDK's ------------------------------------------------------------

DIFFERENTIAL_CASES = 500


def envelope_call(name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments, "_meta": ENVELOPE if meta is None else meta}
    return {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params}


def modern_headers(method: str = "tools/call", name: str | None = "one__echo") -> list[tuple[str, str]]:
    headers = [("accept", ACCEPT), ("content-type", "application/json"), ("mcp-protocol-version", MODERN)]
    return [*headers, ("mcp-method", method), *([("mcp-name", name)] if name is not None else [])]


# Each rung of the checks a plain 2026-07-28 request goes through, with the JSON-RPC error code (or HTTP status)
# it must end in (None: whatever the SDK's entry answers).
DIRECTED: list[tuple[str, dict[str, Any], list[tuple[str, str]], int | None]] = [
    ("a call", envelope_call("one__echo", {"text": "hi"}), modern_headers(), 200),
    ("Mcp-Method disagrees", envelope_call("one__echo", {"text": "hi"}), modern_headers("tools/list"), -32020),
    ("Mcp-Name disagrees", envelope_call("one__echo", {"text": "hi"}), modern_headers(name="one__add"), -32020),
    (
        "a routing header twice",
        envelope_call("one__echo", {"text": "hi"}),
        [*modern_headers(), ("mcp-name", "one__echo")],
        -32020,
    ),
    ("no envelope", envelope_call("one__echo", {"text": "hi"}, meta={}), modern_headers(), types.INVALID_PARAMS),
    (
        "a version this master does not serve",
        envelope_call(
            "one__echo", {"text": "hi"}, meta={**ENVELOPE, "io.modelcontextprotocol/protocolVersion": "2099"}
        ),
        [(k, "2099" if k == "mcp-protocol-version" else v) for k, v in modern_headers()],
        -32022,
    ),
    (
        "Mcp-Param-* missing",
        envelope_call("one__regional", {"region": "eu"}),
        modern_headers(name="one__regional"),
        -32020,
    ),
    (
        "Mcp-Param-* disagrees",
        envelope_call("one__regional", {"region": "eu"}),
        [*modern_headers(name="one__regional"), ("mcp-param-region", "us")],
        -32020,
    ),
    (
        "Mcp-Param-* agrees",
        envelope_call("one__regional", {"region": "eu"}),
        [*modern_headers(name="one__regional"), ("mcp-param-region", "eu")],
        200,
    ),
    ("an unknown tool", envelope_call("nope__echo", {}), modern_headers(name="nope__echo"), types.INVALID_PARAMS),
    (
        "no tool name",
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"arguments": {}, "_meta": ENVELOPE}},
        modern_headers(name=None),
        types.INVALID_PARAMS,
    ),
    (
        "Mcp-Param-* twice",
        envelope_call("one__regional", {"region": "eu"}),
        [*modern_headers(name="one__regional"), ("mcp-param-region", "eu"), ("mcp-param-region", "eu")],
        -32020,
    ),
    ("a string id", {**envelope_call("one__echo", {"text": "hi"}), "id": "call-1"}, modern_headers(), 200),
    (
        "an unknown method",
        {"jsonrpc": "2.0", "id": 5, "method": "tools/nope", "params": {"_meta": ENVELOPE}},
        modern_headers("tools/nope", None),
        types.METHOD_NOT_FOUND,
    ),
    (
        "initialize in the 2026-07-28 era",
        {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {**TEMPLATES["initialize"], "_meta": ENVELOPE}},
        modern_headers("initialize", None),
        None,
    ),
    (
        "params null",
        {"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": None},
        modern_headers("tools/list", None),
        types.INVALID_PARAMS,
    ),
    (
        "not JSON by its content type",
        envelope_call("one__echo", {"text": "hi"}),
        [(k, "text/plain" if k == "content-type" else v) for k, v in modern_headers()],
        400,
    ),
    (
        "a foreign origin",
        envelope_call("one__echo", {"text": "hi"}),
        [*modern_headers(), ("origin", "http://evil.example")],
        403,
    ),
    (
        "no JSON in Accept",
        envelope_call("one__echo", {"text": "hi"}),
        [(k, "text/event-stream" if k == "accept" else v) for k, v in modern_headers()],
        406,
    ),
]


@pytest.fixture(scope="module")
async def sdk_front() -> AsyncIterator[str]:
    """The same master with the SDK's JSON mode configured, which sends every 2026-07-28 request through the SDK's
    own entry: the reference the master's own in-line path (`front_modern`) is held to."""
    async with serve_master(make_config(stdio_server("one")), json_response=True) as (_, url):
        yield url


@pytest.fixture
def entered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The methods of the requests the master's own 2026-07-28 entry served (the masters run in this process)."""
    seen: list[str] = []
    serve = InlineModern.serve

    async def counted(self: InlineModern, message: dict[str, Any], *args: Any) -> None:
        seen.append(message["method"])
        await serve(self, message, *args)

    monkeypatch.setattr(InlineModern, "serve", counted)
    return seen


def answer(outcome: Outcome) -> tuple[int, Any] | None:
    """An answer as it can be compared: its status and its parsed JSON body (the bytes, if it is not JSON); None for
    an event stream, which only the master's default mode opens."""
    if outcome.content_type.startswith("text/event-stream"):
        return None
    try:
        return outcome.status, json.loads(outcome.body)
    except ValueError:
        return outcome.status, outcome.body


def takes_streams(headers: list[tuple[str, str]]) -> bool:
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    return check_accept_headers(Request({"type": "http", "headers": raw}))[1]


def outcome_code(outcome: Outcome) -> int:
    """The JSON-RPC error code of an answer, else its HTTP status."""
    reply = answer(outcome)
    body = reply[1] if reply is not None else None
    error = body.get("error") if isinstance(body, dict) else None
    return error["code"] if isinstance(error, dict) else outcome.status


@pytest.mark.parametrize(("case", "body", "headers", "expected"), DIRECTED, ids=[case[0] for case in DIRECTED])
async def test_each_check_of_a_2026_request_holds_on_the_masters_own_entry(
    front: tuple[MasterServer, str],
    sdk_front: str,
    case: str,
    body: dict[str, Any],
    headers: list[tuple[str, str]],
    expected: int | None,
    entered: list[str],
) -> None:
    async with httpx2.AsyncClient(timeout=CASE_TIMEOUT_S) as http:
        ours = await post(http, front[1], headers, json.dumps(body).encode())
        sdk = await post(http, sdk_front, headers, json.dumps(body).encode())
    if expected is not None:
        assert outcome_code(ours) == expected, ours
    assert answer(ours) == answer(sdk)
    # Only a client that takes no JSON is left to the SDK's entry (and its 406).
    assert entered == ([] if case == "no JSON in Accept" else [body["method"]])


async def test_2026_requests_are_answered_as_the_sdks_own_entry_answers_them(
    front: tuple[MasterServer, str], sdk_front: str, entered: list[str]
) -> None:
    """Fuzzed 2026-07-28 cases (the generator above, its modern door only, one seed), each sent to the master and to
    the reference: the same status and the same body, or both an event stream."""
    rng = random.Random(2026)
    cases: list[Case] = []
    while len(cases) < DIFFERENTIAL_CASES:
        case = make_case(rng)
        # Counts differ between two backends; and a client that takes no event stream is refused (406) by the
        # master's default mode, as by the SDK's entry outside its JSON mode.
        if case.door == "modern" and b"request_counts" not in case.body and takes_streams(case.headers):
            cases.append(case)
    differences: list[str] = []
    compared: Counter[str] = Counter()
    async with httpx2.AsyncClient(timeout=CASE_TIMEOUT_S) as http:
        for case in cases:
            ours = answer(await post(http, front[1], case.headers, case.body))
            sdk = answer(await post(http, sdk_front, case.headers, case.body))
            if ours is None or sdk is None:
                continue
            body = ours[1]
            compared["result" if isinstance(body, dict) and "result" in body else "other"] += 1
            if ours != sdk:
                differences.append(f"ours {ours!r}\nsdk's {sdk!r}\n{case.describe()}")
    assert not differences, f"{len(differences)} differences:\n" + "\n\n".join(differences[:5])
    assert compared["result"] >= 50 and compared["other"] >= 100, compared
    assert len(entered) >= 200 and "one__regional" in str(cases), len(entered)
