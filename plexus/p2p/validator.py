"""The `/plexus/` namespace validator every Plexus DHT node registers, so that storing nodes
refuse forged, tampered, expired, oversized or malformed records (not only readers)."""

from __future__ import annotations

from libp2p.records.validator import NamespacedValidator, Validator

from plexus.p2p.keys import DHT_NAMESPACE, peer_id_from_key
from plexus.p2p.records import CLOCK_SKEW, select_best, verify_record


class ServerRecordValidator(Validator):
    """Storage-side rules: the full record check, with CLOCK_SKEW of grace on expiry so a
    withdrawal (expiry = now) still replaces the record it withdraws."""

    def validate(self, key: str, value: bytes) -> None:
        verify_record(value, peer_id=peer_id_from_key(key), expiry_grace=CLOCK_SKEW)

    def select(self, key: str, values: list[bytes]) -> int:
        return select_best(values, peer_id=peer_id_from_key(key))


def plexus_validator() -> NamespacedValidator:
    """Only `/plexus/...` keys are storable: strict mode rejects every other namespace
    (py-libp2p's default /pk and /ipns namespaces included)."""
    return NamespacedValidator({DHT_NAMESPACE: ServerRecordValidator()}, strict_validation=True)
