"""The front door's coalescer: concurrent publishes for one queue leave as few messages."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from docnum.api.frontdoor.coalescer import Coalescer


def test_concurrent_publishes_are_batched_per_queue_and_all_delivered() -> None:
    sent: list[tuple[str, list[dict]]] = []
    gate = threading.Event()

    def send(queue: str, messages: list[dict]) -> None:
        gate.wait(1)          # the first publish is slow: the rest gather meanwhile
        sent.append((queue, messages))

    coalescer = Coalescer(send, inflight_timeout_s=0.01, max_batch=50)
    with ThreadPoolExecutor(64) as pool:
        futures = [pool.submit(coalescer.publish, f"q{i % 2}", str(i), {"n": i})
                   for i in range(200)]
        time.sleep(0.05)
        gate.set()
        for future in futures:
            future.result(5)
    delivered = sorted(m["n"] for _, batch in sent for m in batch)
    assert delivered == list(range(200))                      # each exactly once
    assert all(m["n"] % 2 == int(q[1]) for q, batch in sent for m in batch)  # right queue
    assert len(sent) < 40                                     # far fewer messages than requests
    assert max(len(batch) for _, batch in sent) <= 50         # bounded batches


def test_a_publish_error_reaches_every_waiting_caller() -> None:
    def send(queue: str, messages: list[dict]) -> None:
        raise ConnectionError("broker down")

    coalescer = Coalescer(send)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(coalescer.publish, "q", str(i), {"n": i}) for i in range(8)]
        for future in futures:
            with pytest.raises(ConnectionError):
                future.result(5)


def test_a_shard_waits_for_its_answers_before_the_next_message() -> None:
    sent: list[list[dict]] = []
    coalescer = Coalescer(lambda queue, messages: sent.append(messages), inflight_limit=1,
                          inflight_timeout_s=5.0)
    coalescer.publish("q", "a", {"n": 0})                 # nothing in flight: leaves at once
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(coalescer.publish, "q", f"b{i}", {"n": i}) for i in range(1, 6)]
        time.sleep(0.1)
        assert len(sent) == 1                             # held back: "a" is unanswered
        coalescer.answered("a")
        for future in futures:
            future.result(2)
    assert [len(m) for m in sent] == [1, 5]               # the five left together


def test_a_busy_shard_lets_its_next_batch_linger_until_it_fills_or_times_out() -> None:
    sent: list[list[dict]] = []
    coalescer = Coalescer(lambda queue, messages: sent.append(messages), inflight_limit=1,
                          inflight_timeout_s=5.0, linger_s=0.3, fill=3)

    def publish_all(ids: list[str]) -> list:
        pool = ThreadPoolExecutor(len(ids))
        return [pool.submit(coalescer.publish, "q", i, {"id": i}) for i in ids]

    coalescer.publish("q", "first", {"id": "first"})       # idle shard: leaves at once
    held = publish_all([f"a{i}" for i in range(4)])       # gather behind it
    time.sleep(0.05)
    coalescer.answered("first")                           # a 1-request batch: not busy
    for future in held:
        future.result(2)
    assert [len(m) for m in sent] == [1, 4]               # the four left at once, together

    # The 4-request batch is answered: the shard is busy, so the next batch lingers.
    started = time.monotonic()
    late = publish_all(["b0", "b1"])
    time.sleep(0.05)
    for i in range(4):
        coalescer.answered(f"a{i}")
    for future in late:
        future.result(2)
    assert [len(m) for m in sent] == [1, 4, 2]            # b0 and b1 left together ...
    assert time.monotonic() - started >= 0.25             # ... only when the linger ended

    # After a small batch nothing lingers.
    started = time.monotonic()
    quick = publish_all([f"c{i}" for i in range(4)])
    time.sleep(0.05)
    coalescer.answered("b0")
    coalescer.answered("b1")                               # 2 < BUSY_BATCH: no linger
    for future in quick:
        future.result(2)
    assert time.monotonic() - started < 0.25 and [len(m) for m in sent][-1] == 4

    # A lingering batch that fills up leaves before the linger ends.
    started = time.monotonic()
    full = publish_all(["e0", "e1", "e2"])
    time.sleep(0.05)
    for i in range(4):
        coalescer.answered(f"c{i}")                        # busy, but 3 (= fill) are waiting
    for future in full:
        future.result(2)
    assert time.monotonic() - started < 0.25 and [len(m) for m in sent][-1] == 3
