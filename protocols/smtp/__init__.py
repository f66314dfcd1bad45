"""SMTP: sans-IO server core and its trio I/O layer.

- `core`: the protocol state machine (h11 shape: bytes in, events out, replies rendered);
  no I/O, no trio, no policy.
- `address`, `esmtp`, `sasl`, `replies`: the pure parts the core is built from (paths,
  ESMTP parameters, SASL PLAIN/LOGIN, replies and the error family).
- `session`: `serve_smtp()`, the per-connection trio coroutine that owns TLS, time and
  spooling, and takes policy from an `SmtpBackend`.
- `fakes`: a data-built `SmtpBackend` for tests.

Nothing is re-exported here, so importing the core never imports trio.
"""
