"""Job events: the model, the durable store, leases, redaction, replay and audit."""
