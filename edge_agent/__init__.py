"""The edgefleet device agent: MQTT link, reconciler, installer, local scoring endpoints, telemetry.

Models are loaded and scored by the scoring runtime it shares with the server (:mod:`edgefleet_runtime`).

Entry point: ``Agent(load_config(path)).run_forever()`` (see :mod:`edge_agent.agent`).
"""

__version__ = "0.1.0"
