"""Property: any sequence of writes, syncs, snapshots, crashes and restarts leaves DiskStorage in
exactly the state MemoryStorage (the model) is in, and both refuse the same writes."""
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nameservice.raft.types import Entry, HardState, Snapshot, SnapshotMeta
from nameservice.storage import DiskStorage, InvalidWriteError, MemoryStorage

SEGMENT_BYTES = 100  # tiny, so that segments roll and compaction deletes them


class DiskMatchesMemory(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="fabric-storage-model-")
        self.disk = DiskStorage(self.dir, segment_bytes=SEGMENT_BYTES)
        self.mem = MemoryStorage()

    def teardown(self):
        self.disk.close(sync=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def both(self, call):
        """Apply a write to both storages; if the model refuses it, the disk must refuse it too."""
        try:
            call(self.mem)
        except InvalidWriteError:
            with pytest.raises(InvalidWriteError):
                call(self.disk)
        else:
            call(self.disk)

    @rule(data=st.data())
    def append(self, data):
        first = data.draw(st.integers(self.mem.first_index(), self.mem.last_index() + 1))
        previous = self.mem.term(first - 1)
        term = data.draw(st.integers(previous, previous + 2))
        blobs = data.draw(st.lists(st.binary(max_size=40), min_size=1, max_size=6))
        entries = [Entry(term, first + k, blob) for k, blob in enumerate(blobs)]
        self.both(lambda s: s.append(entries))

    @rule(data=st.data())
    def set_hard_state(self, data):
        old = self.mem.hard_state
        term = data.draw(st.integers(old.term, old.term + 1))
        vote = data.draw(st.integers(0, 3))
        commit = data.draw(st.integers(old.commit, max(old.commit, self.mem.last_index())))
        self.both(lambda s: s.set_hard_state(HardState(term, vote, commit)))

    @rule()
    def sync(self):
        self.disk.sync()
        self.mem.sync()

    @precondition(lambda self: self.mem.hard_state.commit > self.mem.snapshot.meta.index)
    @rule(data=st.data())
    def compact(self, data):
        index = data.draw(st.integers(self.mem.first_index(), self.mem.hard_state.commit))
        snap = Snapshot(SnapshotMeta(index, self.mem.term(index), (1, 2, 3)),
                        data.draw(st.binary()))
        self.both(lambda s: s.compact(snap))

    @rule(data=st.data())
    def install_snapshot(self, data):
        index = data.draw(st.integers(self.mem.first_index(), self.mem.last_index() + 3))
        existing = self.mem.term(index)
        term = data.draw(st.sampled_from(sorted({existing or 1, self.mem.hard_state.term + 1})))
        snap = Snapshot(SnapshotMeta(index, term, (1, 2)), data.draw(st.binary(max_size=50)))
        self.both(lambda s: s.install_snapshot(snap))

    @rule()
    def crash_and_restart(self):
        self.disk.close(sync=False)
        self.disk = DiskStorage(self.dir, segment_bytes=SEGMENT_BYTES)
        self.mem = self.mem.crashed()

    @rule()
    def clean_restart(self):
        self.disk.close()
        self.disk = DiskStorage(self.dir, segment_bytes=SEGMENT_BYTES)
        self.mem.sync()
        self.mem = self.mem.crashed()

    @invariant()
    def same_state(self):
        assert self.disk.initial_state() == self.mem.initial_state()
        assert self.disk.hard_state == self.mem.hard_state
        assert self.disk.unsynced == self.mem.unsynced


DiskMatchesMemory.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                               deadline=None)
TestDiskMatchesMemory = DiskMatchesMemory.TestCase
