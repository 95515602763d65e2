"""The intermediary's queue: arrival order, requeued first, parking, and one bound in bytes."""
from __future__ import annotations

from fabric.intermediary.batchqueue import BatchQueue

P1, P2 = b"P1", b"P2"


def item(rid: bytes, seq: int, size: int = 10, count: int = 2):
    return (rid, rid[1:] * 16, b"x" * size, seq, count)


def test_batches_leave_in_arrival_order_with_requeued_ones_first():
    queue = BatchQueue(1000)
    queue.append(item(P1, 0))
    queue.append(item(P2, 0))
    queue.put_back(item(P1, 9))
    order = []
    while (first := queue.first()) is not None:
        order.append((first[0], first[3]))
        queue.pop_first()
    assert order == [(P1, 9), (P1, 0), (P2, 0)]
    assert queue.bytes == 0


def test_a_parked_producer_s_batches_wait_and_come_back_first_or_are_dropped():
    queue = BatchQueue(1000)
    queue.append(item(P1, 0))
    queue.append(item(P2, 0))
    queue.append(item(P1, 2))
    queue.park(P1)
    queue.park_item(item(P1, 4))
    assert [i[0] for i in queue] == [P2]
    assert queue.parked_messages() == 6 and queue.messages() == 2
    assert queue.bytes == 40  # parked batches still count against the bound
    queue.unpark(P1)
    assert [(i[0], i[3]) for i in queue] == [(P1, 0), (P1, 2), (P1, 4), (P2, 0)]
    queue.park(P1)
    assert queue.drop_from(P1) == 3 and queue.bytes == 10 and queue.parked_messages() == 0


def test_the_bound_counts_queued_and_parked_bytes_and_refusing_keeps_the_parked():
    queue = BatchQueue(25)
    queue.append(item(P1, 0))
    queue.append(item(P2, 0))
    assert queue.fits(5) and not queue.fits(6)
    queue.park(P1)
    assert not queue.fits(6)
    assert [i[0] for i in queue.take_all()] == [P2]
    assert queue.bytes == 10 and len(queue) == 0
    queue.clear()
    assert queue.bytes == 0 and queue.parked_messages() == 0
