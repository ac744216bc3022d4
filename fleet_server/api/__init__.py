"""The REST API under ``/api`` (FastAPI): routes per resource, typed dependencies, public schemas."""
