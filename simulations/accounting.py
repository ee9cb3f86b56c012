"""The simulated ledger: real `ledger` records, balances and reputations.

Receipts, audit verdicts and fraud proofs are the ledger's own dataclasses; balances come
from `ledger.compute_balances` and reputations from `ledger.ReputationBook`, both pure
functions of the records. Signatures are left out (the simulator trusts itself), which the
pure functions do not look at. One receipt is written per stream, when it closes: receipts
are cumulative and only a stream's highest one counts, so the intermediate ones would not
change any balance.
"""

from __future__ import annotations

import hashlib

from ledger import Account, Audit, FraudProof, Outcome, Receipt, ReputationBook, compute_balances
from ledger.balances import convicted_keys
from ledger.fraud import SignedCommitment
from ledger.reputation import Reputation
from ledger.units import expected_amount

NETWORK_ID = "plexus-sim"
EPOCH0 = 1_800_000_000  # Unix time of the simulation's t = 0
_ZERO_SIGNATURE = bytes(64)


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


class SimLedger:
    def __init__(self, model_id: str, scale_milli: int) -> None:
        self.model_id = model_id
        self.scale_milli = scale_milli
        self.receipts: list[Receipt] = []
        self.audits: list[Audit] = []
        self.proofs: list[FraudProof] = []
        self.book = ReputationBook([])
        self.convicted: set[bytes] = set()

    def receipt(
        self,
        *,
        server: bytes,
        client: bytes,
        session: int,
        span: tuple[int, int],
        prompt_tokens: int,
        generated_tokens: int,
        at: float,
    ) -> Receipt:
        tokens = prompt_tokens + generated_tokens
        receipt = Receipt(
            network_id=NETWORK_ID,
            model_id=self.model_id,
            block_start=span[0],
            block_end=span[1],
            session_id=_digest("session", session)[:16],
            seq=1,
            prompt_tokens=prompt_tokens,
            generated_tokens=generated_tokens,
            amount=expected_amount(tokens, span[0], span[1], self.scale_milli),
            inputs_hash=_digest("inputs", session, span),
            output_commitment=_digest("outputs", session, span, server.hex()),
            epoch=EPOCH0 + int(at),
            server_key=server,
            client_key=client,
        )
        self.receipts.append(receipt)
        return receipt

    def audit(
        self,
        *,
        server: bytes,
        auditor: bytes,
        session: int,
        span: tuple[int, int],
        passed: bool,
        at: float,
    ) -> None:
        self.audits.append(
            Audit(
                network_id=NETWORK_ID,
                model_id=self.model_id,
                block_start=span[0],
                block_end=span[1],
                session_id=_digest("session", session)[:16],
                inputs_hash=_digest("audit", session, span, len(self.audits)),
                outcome=Outcome.PASS if passed else Outcome.FAIL,
                epoch=EPOCH0 + int(at),
                server_key=server,
                auditor_key=auditor,
            )
        )

    def fraud_proof(
        self,
        *,
        accused: bytes,
        witnesses: list[bytes],
        reporter: bytes,
        span: tuple[int, int],
        at: float,
    ) -> None:
        inputs = _digest("fraud", accused.hex(), len(self.proofs))
        self.proofs.append(
            FraudProof(
                network_id=NETWORK_ID,
                model_id=self.model_id,
                block_start=span[0],
                block_end=span[1],
                inputs_hash=inputs,
                epoch=EPOCH0 + int(at),
                accused=SignedCommitment(accused, _digest("bad", inputs), _ZERO_SIGNATURE),
                witnesses=tuple(
                    SignedCommitment(w, _digest("good", inputs), _ZERO_SIGNATURE) for w in witnesses
                ),
                reporter_key=reporter,
            )
        )
        self.convicted = convicted_keys(self.proofs)

    def rebuild_reputation(self) -> None:
        self.book = ReputationBook(self.audits, self.proofs)

    def reputation(self, key: bytes) -> Reputation:
        return self.book.reputation(key)

    def balances(self, until: float | None = None) -> dict[bytes, Account]:
        """Balances from the records signed up to `until` (seconds), or all of them."""
        if until is None:
            return compute_balances(self.receipts, self.proofs)
        limit = EPOCH0 + int(until)
        return compute_balances(
            (r for r in self.receipts if r.epoch <= limit),
            (p for p in self.proofs if p.epoch <= limit),
        )
