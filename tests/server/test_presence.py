"""The control endpoint a node registers (pure: no sockets)."""
from __future__ import annotations

import pytest

from nameservice.server.presence import registered_endpoint

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # Z85 holds ':', and this key does


@pytest.mark.parametrize(("served", "registered"), [
    ("tcp://127.0.0.1:4001", "tcp://node-a:4001"),
    (f"tcp://127.0.0.1:4001;curve={KEY}", f"tcp://node-a:4001;curve={KEY}"),
    (f"tcp://0.0.0.0:4001;curve={KEY}", f"tcp://node-a:4001;curve={KEY}"),
])
def test_a_node_registers_its_control_port_and_its_key_whatever_the_key_holds(served,
                                                                             registered):
    assert registered_endpoint("tcp://node-a:{port}", served) == registered
