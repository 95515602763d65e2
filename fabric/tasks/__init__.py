"""A persistent task queue: submitted once, completed once, retried, delayed, periodic.

The queue is a replica group (``QueueReplica``: a Raft log applied to ``QueueState``) whose
leader dispatches tasks to workers with free slots, each attempt under a lease and a fencing
token. See docs/tasks.md.
"""
from fabric.tasks.client import TaskFailed, TaskHandle, TaskQueue, TaskRefused
from fabric.tasks.protocol import TaskSpec
from fabric.tasks.worker import Attempt, Worker, task

__all__ = ["Attempt", "TaskFailed", "TaskHandle", "TaskQueue", "TaskRefused", "TaskSpec",
           "Worker", "task"]
