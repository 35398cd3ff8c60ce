"""Tokenflow: hands Blynk static tokens to Particle devices through the Cloud-to-Device Ledger."""

__version__ = "0.1.0"
