"""Hub transport, connectors, queue and outbound delivery."""
