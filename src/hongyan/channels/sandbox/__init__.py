"""Carrier sandbox: a local SMPP 3.4 SMSC for development and tests.

See :mod:`hongyan.channels.sandbox.smsc`.
"""

from hongyan.channels.sandbox.smsc import (
    ReassembledMessage,
    ReceivedSubmit,
    SandboxConfig,
    SandboxSmsc,
    SentReceipt,
)

__all__ = [
    "ReassembledMessage",
    "ReceivedSubmit",
    "SandboxConfig",
    "SandboxSmsc",
    "SentReceipt",
]
