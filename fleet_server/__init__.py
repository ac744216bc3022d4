"""The fleet server: model registry, bundle builder and signer, devices, deployments, telemetry.

Layout: :mod:`.config` (settings), :mod:`.fleet` (the core without HTTP),
:mod:`.store` (SQLite tables and content-addressed files), services
(:mod:`.registry`, :mod:`.bundler`, :mod:`.deployments`, :mod:`.desired`,
:mod:`.handlers`), the MQTT side (:mod:`.mqtt_link`, :mod:`.broker`), the
HTTP API (:mod:`.api`) and :mod:`.runner`. Everything on the wire comes from
:mod:`fleet_protocol`.
"""
