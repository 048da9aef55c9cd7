"""Host facts: what a host CPU offers, read from any supported source."""
