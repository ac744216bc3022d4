"""The contract between fleet server and edge agent.

Bundle manifests, signing and verification, topic names, message schemas and
the Open Inference Protocol v2 codec. Pure logic only: nothing in this package
opens a file, a socket or a clock-dependent resource on its own; callers pass
bytes and timestamps in and get values or exceptions out.
"""

PROTOCOL_VERSION = 1
