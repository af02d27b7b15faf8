"""Outbox dispatch: deliver every queued output to its destination, exactly once."""
