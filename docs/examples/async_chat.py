"""A multi-turn chat from a trio program, streaming the reply.

PLEXUS_INITIAL_PEERS=/ip4/127.0.0.1/tcp/31337/p2p/12D3KooW... python async_chat.py
"""

import os

import trio

from plexus import AsyncClient, PlexusError


async def main() -> None:
    peers = os.environ["PLEXUS_INITIAL_PEERS"].split()
    async with AsyncClient.connect("plexus-tiny", initial_peers=peers) as client:
        chat = client.chat(system="You are terse.")
        for question in ["Hello!", "And again?"]:
            reply = await chat.send(question, max_new_tokens=12, on_text=lambda p: None)
            print(f"user: {question}\nassistant: {reply.text!r} ({reply.finish_reason})")
        print("route:", [(h["start"], h["end"]) for h in client.last_route])
        await chat.aclose()
        try:
            await client.generate("", max_new_tokens=4)
        except PlexusError as exc:  # every deliberate error is a PlexusError
            print("refused:", exc)


trio.run(main)
