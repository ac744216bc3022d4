"""Firmware profiles shipped with edgefleet: one TOML file per hardware target.

The ``.toml`` files here are package data; :func:`fleet_protocol.profiles.load_profile`
finds them by name with :mod:`importlib.resources`, so an installed agent needs no
source checkout. The schema is documented in :mod:`fleet_protocol.profiles`.
"""
