"""Drift of model inputs and outputs, from the histogram windows devices send (never their raw data).

- :mod:`.baseline`: a baseline file (``.npy``, ``.npz``, ``.csv``) to a reference, at registration;
- :mod:`.stats`: PSI, Jensen–Shannon distance and KS statistic of merged counts against the reference;
- :mod:`.service`: windows in (validated, stored once), alerts raised once per crossing, reports out.

The formats shared with devices live in :mod:`fleet_protocol.drift`.
"""
