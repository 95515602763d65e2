"""A process's security metrics (``fabric_security_*``): its mode, the handshakes its ZAP
handlers allowed and refused, the rules in force and the connections revocations cut. Served by
every process that serves metrics (docs/operations.md, "Metrics")."""
from __future__ import annotations

from collections.abc import Iterator

from nameservice.metrics import Metric, Sample, TableCollector
from nameservice.security.context import Security
from nameservice.security.context import current as security

__all__ = ["SECURITY_METRICS", "SecurityCollector", "security_samples"]

_C, _G = "counter", "gauge"

SECURITY_METRICS: tuple[Metric, ...] = (
    Metric("fabric_security_curve", _G, "1 when the process has keys (CURVE on every socket), "
                                        "0 in insecure mode."),
    Metric("fabric_security_handshakes_allowed_total", _C, "CURVE handshakes the ZAP handler "
                                                           "allowed."),
    Metric("fabric_security_handshakes_refused_total", _C, "Handshakes refused, by reason: "
           "unknown_key (no rule allows it), mechanism (not CURVE), bad_request (a malformed "
           "ZAP request).", ("reason",)),
    Metric("fabric_security_rules", _G, "Access rules in force from the name service (the "
                                        "bootstrap files' keys aside)."),
    Metric("fabric_security_revoked_keys", _G, "Keys revoked in the name service."),
    Metric("fabric_security_cut_connections_total", _C, "Open connections cut because their "
                                                        "key was revoked."),
    Metric("fabric_security_connections_refused_total", _C, "Connections shut down because "
           "their listening socket had its limit open (FABRIC_MAX_CONNECTIONS), keys or not."),
)


def security_samples(found: Security | None = None) -> Iterator[Sample]:
    """The current values of ``SECURITY_METRICS`` (of this process's security by default)."""
    sec = found if found is not None else security()
    counters = sec.counters()
    yield "fabric_security_curve", (), 1 if sec.secure else 0
    yield "fabric_security_handshakes_allowed_total", (), counters.get("zap_allowed", 0)
    for reason, name in (("unknown_key", "zap_refused_unknown_key"),
                         ("mechanism", "zap_refused_mechanism"),
                         ("bad_request", "zap_bad_requests")):
        yield "fabric_security_handshakes_refused_total", (reason,), counters.get(name, 0)
    yield "fabric_security_rules", (), len(sec.rules.stored)
    yield "fabric_security_revoked_keys", (), len(sec.rules.revoked)
    yield "fabric_security_cut_connections_total", (), sec.cut_connections
    yield ("fabric_security_connections_refused_total", (),
           counters.get("connections_refused", 0))


class SecurityCollector(TableCollector):
    """Serves ``SECURITY_METRICS`` of this process."""

    def __init__(self) -> None:
        super().__init__(SECURITY_METRICS, security_samples)
