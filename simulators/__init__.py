"""Virtual devices that run the real agent code (one process per device, own state and profile)."""
