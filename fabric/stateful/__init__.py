"""Stateful components: state kept by a group of replicas behind a Raft log.

A component class (:class:`Stateful`) applies messages to its state deterministically; each
replica of its group applies the same log; only the leader consumes its input channel, and a
message is acknowledged to its producer only once its log entry is committed and applied. See
docs/stateful.md.
"""
from fabric.stateful.component import Input, Stateful

__all__ = ["Input", "Stateful"]
