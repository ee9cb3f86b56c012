"""Verification of untrusted servers: signed commitments to every result, unpredictable
audits on other servers, arbitration, fraud proofs and the adaptive audit rate.
See docs/verification.md."""

from plexus.verification.policy import audit_probability

NETWORK_ID = "plexus-main"
"""The ledger network id (domain separation of every signature) of the public swarm."""

__all__ = ["NETWORK_ID", "audit_probability"]
