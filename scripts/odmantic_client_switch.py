"""pytest plugin: ODMantic's tests on asyncmongo's Motor-compatible client (scripts/odmantic_suite.py).

Loaded with ``-p odmantic_client_switch`` before any test module: it puts asyncmongo.motor_asyncio's
classes in place of motor.motor_asyncio's, so ODMantic (``from motor.motor_asyncio import ...`` in
odmantic.engine) and the suite's own fixtures get asyncmongo's client. Nothing else changes.
"""

import motor.motor_asyncio

from asyncmongo import motor_asyncio as _ours

for _name in _ours.__all__:
    setattr(motor.motor_asyncio, _name, getattr(_ours, _name))
