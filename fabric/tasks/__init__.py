"""A persistent task queue: submitted once, completed once, retried, delayed, periodic.

The queue is a replica group (``QueueReplica``: a Raft log applied to ``QueueState``) whose
leader dispatches tasks to workers with free slots, each attempt under a lease and a fencing
token. See docs/tasks.md. Names are imported on first use: a worker does not load the
queue's replica.
"""
from nameservice.lazy import lazy_exports

_EXPORTS = {
    "TaskFailed": "fabric.tasks.client", "TaskHandle": "fabric.tasks.client",
    "TaskQueue": "fabric.tasks.client", "TaskRefused": "fabric.tasks.client",
    "TaskSpec": "fabric.tasks.protocol", "Attempt": "fabric.tasks.worker",
    "Worker": "fabric.tasks.worker", "task": "fabric.tasks.worker",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
