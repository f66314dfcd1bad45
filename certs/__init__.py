"""TLS contexts and certificates."""
