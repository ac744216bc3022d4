"""One module per resource, named by the URL: the routes under ``/api/<first segment>/...`` live in
``routes/<first segment>.py``.

The rule, checked by ``tests/unit/test_route_layout.py``:

- a path's module is its first segment after ``/api`` (``/api/devices/{id}/telemetry`` → ``devices.py``,
  ``/api/models/{name}/versions/{v}/drift`` → ``models.py``); paths outside ``/api`` the same way
  (``/wheels/...`` → ``wheels.py``, ``/metrics`` → ``metrics.py``, ``/install.sh`` → ``install.py``); two
  exceptions: the Open Inference Protocol's ``/v2/...`` is ``inference.py``, and the server's two probes
  (``/api/health``, ``/api/ready``) are both ``health.py``;
- the dashboard's own two (``/api/events``, ``/api/whoami``) are in :mod:`fleet_server.dashboard.router`;
- a route module calls services only, through the typed dependencies of :mod:`fleet_server.api.deps`: it
  never imports :mod:`fleet_server.store` or another route module (``_params`` holds what they share: parsing
  query and form values, audit notes).

Every router is mounted by :func:`fleet_server.api.app.create_app`, under ``/api`` for the resources.
"""
