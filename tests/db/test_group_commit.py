"""GroupCommit's own guarantees, with a store the test controls: every waiter is answered, whatever happens to the
flusher, and a stopped write reads as the database being unavailable (503 at the API), never as a bug."""

from __future__ import annotations

import asyncio

from varsel.db.engine import database_unavailable
from varsel.db.group_commit import GroupCommit, WriterStopped


class Store:
    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def __call__(self, items: list[int]) -> list[int | Exception]:
        await self.hold.wait()
        self.groups.append(list(items))
        return [item * 10 if item >= 0 else ValueError(f"refused {item}") for item in items]


async def test_items_are_answered_in_groups_and_each_gets_its_own_result() -> None:
    store = Store()
    written: list[list[int]] = []
    group = GroupCommit(store, max_items=3, on_group=written.append)
    outcomes = await asyncio.gather(*(group.write(n) for n in (1, 2, -3, 4)), return_exceptions=True)
    assert outcomes[:2] == [10, 20]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == 40
    assert store.groups == [[1, 2, -3], [4]]
    # Told of what each commit wrote: not the refused item.
    assert written == [[1, 2], [4]]


async def test_a_failing_on_group_neither_fails_the_committed_group_nor_stops_the_writer() -> None:
    store = Store()

    def broken(items: list[int]) -> None:
        raise RuntimeError("a metric or log line failed")

    group = GroupCommit(store, max_items=2, on_group=broken)
    # The third waits behind the first group: it must be written, not answered "stopped" by a writer that died.
    assert await asyncio.gather(*(group.write(n) for n in (1, 2, 3))) == [10, 20, 30]
    # Each written once, in its group: not taken for failed and written again one by one.
    assert store.groups == [[1, 2], [3]]


async def test_a_flusher_cancelled_mid_write_answers_its_group_and_the_queue_as_stopped() -> None:
    store = Store()
    store.hold.clear()
    group: GroupCommit[int, int] = GroupCommit(store, max_items=2)
    writes = [asyncio.create_task(group.write(n)) for n in range(4)]
    await asyncio.sleep(0)  # queued
    await asyncio.sleep(0)  # the flusher has taken [0, 1] and waits in the store
    (flusher,) = group._flushers
    flusher.cancel()
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, WriterStopped)
        assert database_unavailable(outcome)  # the API answers 503 with Retry-After, not 500
    # A later write finds no live flusher and is written.
    store.hold.set()
    assert await asyncio.wait_for(group.write(7), 5) == 70


async def test_a_flusher_cancelled_before_its_first_step_strands_nobody() -> None:
    # Cancelled before it ran, it never saw the queue (nor ran its `finally`): the next write must still start a
    # flusher, which takes the earlier item too.
    store = Store()
    group: GroupCommit[int, int] = GroupCommit(store, max_items=10)
    first = asyncio.create_task(group.write(1))
    await asyncio.sleep(0)  # first queued and its flusher created, not yet run
    for task in list(group._flushers):
        task.cancel()
    await asyncio.sleep(0)
    assert await asyncio.wait_for(group.write(2), 5) == 20
    assert await asyncio.wait_for(first, 5) == 10


async def test_a_submitted_item_is_written_without_a_waiting_caller_and_given_up_waiting_for_it_is_still_written() -> (
    None
):
    """submit queues without a task of the caller's: the future is answered once the group is written; a caller
    that cancels its future gives up waiting, not the write (the instant path's outcome writes rely on both)."""
    store = Store()
    store.hold.clear()
    group: GroupCommit[int, int] = GroupCommit(store, max_items=4)
    kept, abandoned = group.submit(1), group.submit(2)
    await asyncio.sleep(0)  # the flusher has taken both and waits in the store
    abandoned.cancel()
    assert not kept.done()
    store.hold.set()
    assert await asyncio.wait_for(kept, 1) == 10
    assert store.groups == [[1, 2]]
    assert abandoned.cancelled()
    # The writer is not stuck on the abandoned future: the next item goes through.
    assert await group.write(3) == 30
