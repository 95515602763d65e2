"""The ``fabric`` command line: one click group (``main.py``) and a module per command group
(``ns.py``: the name service and ``kv``; ``ops.py``: ``status`` and ``drain``; ``component.py``:
``component run``; ``butterfly.py``: the demo). Each command imports what it uses when it runs,
so starting the command line loads little. Nothing is imported here.
"""
