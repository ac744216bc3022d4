"""The operator's web dashboard: a static single-page app plus a server-sent event stream.

``install(app)`` mounts both on an app from :func:`fleet_server.api.app.create_app`.
"""

from .router import install

__all__ = ["install"]
