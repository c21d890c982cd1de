"""SMPP 3.4 support. :mod:`hongyan.channels.smpp.pdu` holds the pure (no I/O) PDU codec."""
