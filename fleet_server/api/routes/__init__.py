"""One router per resource; all mounted under ``/api`` by :func:`fleet_server.api.app.create_app`."""
