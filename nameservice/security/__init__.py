"""CurveZMQ keys and the ZAP handler that decides who may connect (docs/security.md)."""
