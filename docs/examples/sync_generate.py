"""Generate text from a plain script (no async), and look at the route it took.

PLEXUS_INITIAL_PEERS=/ip4/127.0.0.1/tcp/31337/p2p/12D3KooW... python sync_generate.py
"""

import os

from plexus import Client

peers = os.environ["PLEXUS_INITIAL_PEERS"].split()

with Client("plexus-tiny", initial_peers=peers) as client:
    result = client.generate("Once upon a time", max_new_tokens=16)
    print("text:", repr(result.text))
    print("token ids:", result.token_ids)
    print(f"{result.tokens_per_s:.1f} tokens/s")
    for hop in result.route:
        print(f"  blocks {hop['start']}-{hop['end']} on {hop['peer_id']}")

    # Token by token, as the text arrives:
    for piece in client.stream("The swarm says", max_new_tokens=8, temperature=0.8, seed=1):
        print(repr(piece))
