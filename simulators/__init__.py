"""Virtual devices that run the real agent code, each with its own state and firmware profile.

:mod:`.devices` starts one agent process per device (demo, end-to-end tests);
:mod:`.fleet` runs thousands of devices per process on one :mod:`.mqtt_loop`,
spread over processes by :mod:`.processes` (``edgefleet simulate``), with the
faults of :mod:`.faults`.
"""
