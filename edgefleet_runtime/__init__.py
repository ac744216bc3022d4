"""The scoring runtime both the agent and the server's cloud scoring run: one package, no agent or server code.

Models open on the firmware profile's accelerators (:mod:`.accelerators`,
:mod:`.model_runners`), modules load with their entry scripts and health
checks (:mod:`.runtime`, :mod:`.health`), requests are checked against the
module's signature (:mod:`.inputs`) and answers shaped and counted
(:mod:`.scored`, :mod:`.answers`, :mod:`.feedback`); a module's ``config``
is checked at build with the same parsers (:mod:`.module_config`). The
Open Inference Protocol gRPC service (:mod:`.grpc_api`, optional extra) and
the Prometheus table (:mod:`.metric_families`) are shared the same way, and so
is the thread that walks a broker cluster's nodes for both sides' MQTT links
(:mod:`.mqtt_failover`). Not here: the MQTT links themselves, installing bundles, the outbox, HTTP endpoints, the fleet
(``edge_agent`` and ``fleet_server`` import this package, never the reverse).
"""
