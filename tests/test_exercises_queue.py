"""The run queue: a bound on runs at once, first come first served, across event loops, with each
waiter's place and expected wait; and two grades at once through a queue of one."""

from __future__ import annotations

import asyncio
import threading
from contextlib import asynccontextmanager

import exercises
from exercises.runqueue import RunQueue


async def test_a_second_run_waits_for_the_first_and_is_told_its_place():
    queue = RunQueue(slots=1)
    first_in, release = asyncio.Event(), asyncio.Event()
    told: list[str] = []

    async def first():
        async with queue.turn():
            first_in.set()
            await release.wait()

    holder = asyncio.create_task(first())
    await first_in.wait()
    second = queue.turn(lambda what, fraction=None: told.append(what))
    waiter = asyncio.create_task(second.__aenter__())
    await asyncio.sleep(0.1)
    assert not waiter.done()
    assert queue.status().running == 1 and queue.status().waiting == 1
    assert told and told[0].startswith("Waiting for a free runner: number 1 in line, about ")
    release.set()
    await holder
    await asyncio.wait_for(waiter, 2)
    assert queue.status().running == 1 and queue.status().waiting == 0
    await second.__aexit__(None, None, None)
    assert queue.status().running == 0


async def test_waiters_get_their_turns_in_the_order_they_came_and_at_most_slots_at_once():
    queue = RunQueue(slots=2)
    order, running, most = [], 0, 0

    async def one(number: int):
        nonlocal running, most
        async with queue.turn():
            order.append(number)
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.02)
            running -= 1

    tasks = []
    for number in range(6):
        tasks.append(asyncio.create_task(one(number)))
        await asyncio.sleep(0)  # each enters the queue before the next
    await asyncio.gather(*tasks)
    assert order == list(range(6)) and most == 2
    assert queue.status().average_seconds >= 0.02


@asynccontextmanager
async def slot_taken(queue: RunQueue):
    """Inside the block, a run holds the queue's one slot; it leaves when the block ends."""
    hold = asyncio.Event()

    async def holder():
        async with queue.turn():
            await hold.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    try:
        yield
    finally:
        hold.set()
        await task


async def test_the_expected_wait_counts_the_runs_ahead_in_waves_of_slots():
    queue = RunQueue(slots=1)
    queue._recent.extend([2.0, 2.0])  # the average run here: 2 s
    async with slot_taken(queue):
        turns = [queue.turn() for _ in range(3)]
        waiters = [asyncio.create_task(turn.__aenter__()) for turn in turns]
        await asyncio.sleep(0.01)
        places = [queue.place_of(ticket) for ticket in list(queue._waiting)]
        assert [p.place for p in places] == [1, 2, 3]
        assert [round(p.expected_wait) for p in places] == [2, 4, 6]
    for waiter in waiters:
        waiter.cancel()


def test_runs_from_two_event_loops_share_one_bound():
    queue = RunQueue(slots=1)
    inside = threading.Event()
    leave = threading.Event()
    second_entered = threading.Event()

    def on_loop(action):
        asyncio.run(action())

    async def first():
        async with queue.turn():
            inside.set()
            await asyncio.to_thread(leave.wait)

    async def second():
        async with queue.turn():
            second_entered.set()

    one = threading.Thread(target=on_loop, args=(first,))
    one.start()
    assert inside.wait(5)
    two = threading.Thread(target=on_loop, args=(second,))
    two.start()
    assert not second_entered.wait(0.3)
    leave.set()
    assert second_entered.wait(5)
    one.join(5)
    two.join(5)


async def test_a_waiter_that_gives_up_leaves_the_line():
    queue = RunQueue(slots=1)
    async with slot_taken(queue):
        waiter = asyncio.create_task(queue.turn().__aenter__())
        await asyncio.sleep(0.01)
        assert queue.status().waiting == 1
        waiter.cancel()
        await asyncio.sleep(0.01)
        assert queue.status().waiting == 0
    assert queue.status().running == 0


async def test_two_grades_at_once_through_a_queue_of_one_both_pass_and_the_second_is_told_it_waits(cluster):
    queue = RunQueue(slots=1)
    told: list[list[str]] = [[], []]
    key = exercises.get("latest-scores").answer_key
    await cluster.ensure_ready()
    grades = await asyncio.gather(*(
        exercises.grade("latest-scores", key, cluster=cluster, queue=queue,
                        report=lambda what, fraction=None, n=n: told[n].append(what)) for n in range(2)))
    assert all(grade.passed for grade in grades)
    second = 0 if grades[0].waited_seconds > grades[1].waited_seconds else 1
    assert any(line.startswith("Waiting for a free runner: number 1 in line") for line in told[second])
    assert grades[second].waited_seconds > 0.3
