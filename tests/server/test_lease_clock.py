"""The leader's lease clock (pure: time is passed in)."""
from __future__ import annotations

from nameservice.kv import Batch, LeaseExpire, decode_command
from nameservice.server.leases import LeaseClock


def always(_lease_id: int) -> bool:
    return True


def test_a_new_leader_gives_every_lease_its_whole_ttl_from_now():
    clock = LeaseClock(retry_s=60.0)
    clock.start({1: 1000, 2: 3000}, now=100.0)
    assert clock.due(100.999, always) == []
    assert clock.due(101.0, always) == [1]
    assert clock.due(102.999, always) == []
    assert clock.due(103.0, always) == [2]


def test_a_keepalive_moves_the_deadline_and_answers_the_ttl():
    clock = LeaseClock()
    clock.start({}, now=0.0)
    clock.granted(7, 2000, now=0.0)
    assert clock.keepalive(7, 2000, now=1.5) == 2000
    assert clock.due(2.0, always) == []
    assert clock.due(3.5, always) == [7]


def test_a_due_lease_is_refused_keepalives_and_offered_again_while_it_exists():
    clock = LeaseClock(retry_s=1.0)
    clock.start({4: 1000}, now=0.0)
    assert clock.due(1.0, always) == [4]
    # On its way out: the client must learn that it is lost.
    assert clock.keepalive(4, 1000, now=1.1) == 0
    assert clock.due(1.9, always) == []
    assert clock.due(2.0, always) == [4]  # the expiry proposal was lost: propose again
    assert clock.due(3.0, lambda lease_id: False) == []  # expired meanwhile: forgotten
    assert not clock.knows(4)


def test_a_clock_that_does_not_lead_renews_nothing():
    clock = LeaseClock()
    assert clock.keepalive(1, 1000, now=0.0) == 0
    clock.granted(1, 1000, now=0.0)  # not leading: ignored
    assert not clock.knows(1)
    clock.start({1: 1000}, now=0.0)
    clock.stop()
    assert clock.keepalive(1, 1000, now=0.0) == 0 and len(clock) == 0


def test_a_revoked_lease_is_forgotten_when_its_deadline_comes():
    clock = LeaseClock()
    clock.start({1: 1000, 2: 1000}, now=0.0)
    assert clock.due(1.0, lambda lease_id: lease_id == 2) == [2]
    assert not clock.knows(1)


def test_frequent_keepalives_keep_the_heap_bounded():
    clock = LeaseClock()
    clock.start({i: 10_000 for i in range(1, 11)}, now=0.0)
    for step in range(100_000):
        clock.keepalive(1 + step % 10, 10_000, now=step / 1e6)
    assert len(clock._heap) <= 4 * 10 + 1024 + 1
    assert clock.due(10.05, always) == []
    assert sorted(clock.due(10.2, always)) == list(range(1, 11))


def test_expiry_entries_are_batches_of_lease_expire():
    clock = LeaseClock()
    clock.start({3: 1000, 5: 1000}, now=0.0)
    entries = clock.expiry_entries(1.0, always)
    assert len(entries) == 1
    assert decode_command(entries[0]) == Batch((LeaseExpire(3), LeaseExpire(5)))
