"""Receipt factories shared by the ledger tests."""

from __future__ import annotations

import nacl.signing

from ledger.receipts import Receipt, SignedReceipt, issue

NETWORK = "plexus-test"
MODEL = "meta-llama/Meta-Llama-3-8B"


def key(seed: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed.to_bytes(32, "big"))


def pub(signing_key: nacl.signing.SigningKey) -> bytes:
    return bytes(signing_key.verify_key)


def session(n: int) -> bytes:
    return n.to_bytes(16, "big")


def make_receipt(
    server: nacl.signing.SigningKey,
    client: nacl.signing.SigningKey,
    *,
    session_id: bytes = session(1),
    seq: int = 1,
    amount: int | None = None,
    tokens: int = 10,
    epoch: int = 1_700_000_000,
    network_id: str = NETWORK,
    model_id: str = MODEL,
    span: tuple[int, int] = (0, 7),
) -> Receipt:
    blocks = span[1] - span[0] + 1
    return Receipt(
        network_id=network_id,
        model_id=model_id,
        block_start=span[0],
        block_end=span[1],
        session_id=session_id,
        seq=seq,
        prompt_tokens=tokens,
        generated_tokens=seq,
        amount=(tokens + seq) * blocks * 1000 if amount is None else amount,
        inputs_hash=bytes([seq % 256]) * 32,
        output_commitment=bytes([(seq + 1) % 256]) * 32,
        epoch=epoch,
        server_key=pub(server),
        client_key=pub(client),
    )


def issue_receipt(
    server: nacl.signing.SigningKey, client: nacl.signing.SigningKey, **kw: object
) -> SignedReceipt:
    return issue(make_receipt(server, client, **kw), server, client)  # type: ignore[arg-type]
