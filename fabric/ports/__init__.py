"""Ports: how a component sends into a channel and receives from it.

An ``OutputPort`` (``output.py``) batches messages, spreads them over every intermediary of its
channel by credit and keeps each batch until a consumer acknowledges it; an ``InputPort``
(``input.py``) takes batches from every intermediary, hands each message to its handler once
and acknowledges it. Both are a ``Port`` (``base.py``: start, close, the endpoint set, and
leaving ``async with`` normally drains), and both keep one ``Link`` per intermediary
(``links.py``: a DEALER socket, its heartbeats and its connection state, seen by
``monitor.py``'s socket-monitor parser and read by ``reader.py``). ``received.py`` is what a
consumer handed out (``Message``) and remembers, ``claim_answers.py`` its answers to the claim
rounds after an intermediary is lost; ``sync.py`` gives both ports a blocking twin for threads.
Nothing is imported here.
"""
