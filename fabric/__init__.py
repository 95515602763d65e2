"""fabric: a broker-less messaging fabric on ZeroMQ that survives the death of any one process."""

__version__ = "0.1.0"
