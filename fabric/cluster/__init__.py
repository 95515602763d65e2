"""The cluster manager: agents run instances on their hosts, one elected manager places the
deployed networks' instances on them and places a lost host's instances again, fenced by the
agents' leases. See docs/cluster.md. Modules: ``network.py`` (the TOML file), ``keys.py``
(the records in the name service), ``placement.py`` (pure), ``fence.py``, ``supervisor.py``
(child processes), ``agent.py``, ``manager.py``, ``status.py``, ``process.py``.
"""
