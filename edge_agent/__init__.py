"""The edgefleet device agent: MQTT link, reconciler, installer, runtime host, local scoring, telemetry.

Entry point: ``Agent(load_config(path)).run_forever()`` (see :mod:`edge_agent.agent`).
"""

__version__ = "0.1.0"
