"""Memory limits: request bodies read at once share BodyMemory (503 past it), and the
TokenCache evicts entries of empty folders and keeps at most TOKEN_CACHE_ENTRIES."""

from __future__ import annotations

import http.client
import time
from typing import Any

from eas_env import EasEnv, default_settings

from protocols.activesync.context import DEFAULT_BODIES_IN_MEMORY
from protocols.activesync.mail import TokenCache

WAIT = 20.0
BODY = 100_000


def _empty_entry() -> tuple[dict[int, int], dict[int, int], set[int]]:
    return {}, {}, set()


def test_token_cache_evicts_empty_folders_and_caps_entries() -> None:
    cache = TokenCache(items=100)
    for n in range(1000):
        cache.put(("folder", n), _empty_entry())
    assert cache.get(("folder", 0)) is None  # each entry counts as one item
    assert cache.get(("folder", 999)) is not None
    assert len(cache) == 100
    capped = TokenCache(items=10**9, entries=5)
    for n in range(10):
        capped.put(("folder", n), ({n: 1}, {n: 1}, {n}))
    assert len(capped) == 5 and capped.get(("folder", 9)) is not None
    assert capped.get(("folder", 4)) is None


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.01)


def test_bodies_being_read_share_a_memory_limit(make_env: Any) -> None:
    settings = default_settings(max_request_body=BODY, max_body_memory=BODY + BODY // 2)
    env: EasEnv = make_env(settings=settings)
    uploader = env.client(device_id="uploader")
    key = uploader.provision()
    other = env.client(device_id="other")
    other.provision()
    second = b"y" * (BODY * 7 // 10)  # fits alone, not beside 90% of the first
    headers = {
        "Authorization": uploader.authorization(),
        "Content-Type": "application/vnd.ms-sync.wbxml",
        "MS-ASProtocolVersion": "16.1",
        "X-MS-PolicyKey": key,
        "Content-Length": str(BODY),
    }
    slow = http.client.HTTPSConnection("localhost", env.port, context=env.context, timeout=30)
    try:
        slow.putrequest("POST", uploader.target("Settings"))
        for name, value in headers.items():
            slow.putheader(name, value)
        slow.endheaders()
        slow.send(b"x" * (BODY - 10_000))  # most of it; the rest comes later
        _wait_for(lambda: env.app.statistics().body_bytes >= BODY - 10_000)
        refused = other.command("Settings", body=second)
        assert refused.status == 503 and refused.headers.get("retry-after")
        assert env.app.statistics().body_bytes == BODY - 10_000  # the refused one gave back
        slow.send(b"x" * 10_000)
        answer = slow.getresponse()
        answer.read()
        assert answer.status == 400  # not WBXML; read whole all the same
    finally:
        slow.close()
    _wait_for(lambda: env.app.statistics().body_bytes == 0)
    assert other.command("Settings", body=second).status == 400  # room again: read, not WBXML


def test_the_default_body_memory_scales_with_the_request_limit() -> None:
    settings = default_settings(max_request_body=BODY)
    assert settings.body_memory == DEFAULT_BODIES_IN_MEMORY * BODY
    assert default_settings(max_body_memory=BODY - 1, max_request_body=BODY).errors()
