"""The generation loop: embed, run the chain, pick a token, repeat; with streaming text."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from plexus.client.idle_work import IdleWorkTrial
from plexus.client.inference import InferenceSession
from plexus.client.sampling import Sampler, SamplingParams
from plexus.models.head import ClientHead


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    route: list[dict[str, object]]
    tokens_per_s: float
    prompt_tokens: int
    finish_reason: str  # "eos", "stop", or "length"
    failovers: int = 0
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "route": self.route,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "prompt_tokens": self.prompt_tokens,
            "finish_reason": self.finish_reason,
            "failovers": self.failovers,
            "seconds": round(self.seconds, 3),
        }


class TextStream:
    """Turns growing token ids into text pieces, holding back half-decoded characters."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.emitted = ""

    def push(self, token_ids: list[int]) -> str:
        text = self.decode(token_ids)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character
            return ""
        piece = text[len(self.emitted) :] if text.startswith(self.emitted) else ""
        self.emitted = text
        return piece


async def generate_tokens(
    session: InferenceSession,
    head: ClientHead,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    sampling: SamplingParams,
    eos_token_ids: Sequence[int] = (),
    decode: Callable[[list[int]], str] | None = None,
    stop: Sequence[str] = (),
    on_text: Callable[[str], object] | None = None,
    on_token: Callable[[int], object] | None = None,
    history_ids: torch.Tensor | None = None,
    prefetch_trial: IdleWorkTrial | None = None,
) -> Generation:
    """Generate up to `max_new_tokens` after `input_ids` [1, T] (new tokens of the session).

    `history_ids` are earlier tokens already in the session (multi-turn), used only for
    the repetition penalty. `prefetch_trial` decides whether the LM head is read into the
    cache while the last server computes (never, without one).
    """
    sampler = Sampler(sampling)
    stream = TextStream(decode) if decode else None
    generated: list[int] = []
    seen = input_ids if history_ids is None else torch.cat([history_ids, input_ids], dim=1)
    finish = "length"
    text = ""
    started = time.perf_counter()
    step_ids = input_ids
    trial = prefetch_trial if head.prefetch_helps else None
    for _ in range(max_new_tokens):
        decoding = step_ids.shape[1] == 1
        prefetch = trial is not None and trial.use(decoding)
        step_started = time.perf_counter()
        # The logits are computed while the last server's commitment is on its way.
        _, logits = await session.step_and(
            head.embed(step_ids),
            lambda out: head.logits(out[:, -1]),
            while_waiting=head.prefetch if prefetch else None,
        )
        if trial is not None and decoding:
            trial.observe(prefetch, time.perf_counter() - step_started)
        assert logits is not None
        next_id = int(sampler(logits, seen)[0])
        generated.append(next_id)
        if on_token is not None:
            on_token(next_id)
        seen = torch.cat([seen, torch.tensor([[next_id]])], dim=1)
        if next_id in eos_token_ids:
            generated.pop()
            finish = "eos"
            break
        if stream is not None:
            piece = stream.push(generated)
            text = stream.emitted
            if stop and any(s in text for s in stop):
                cut = min(text.index(s) for s in stop if s in text)
                already = len(text) - len(piece)
                if on_text is not None and cut > already:
                    on_text(text[already:cut])
                text = text[:cut]
                finish = "stop"
                break
            if piece and on_text is not None:
                on_text(piece)
        step_ids = torch.tensor([[next_id]])
    seconds = time.perf_counter() - started
    if decode is not None and finish != "stop":
        text = decode(generated)
    return Generation(
        text=text,
        token_ids=generated,
        route=session.route,
        tokens_per_s=len(generated) / seconds if seconds > 0 else 0.0,
        prompt_tokens=int(input_ids.shape[1]),
        finish_reason=finish,
        failovers=session.failovers,
        seconds=seconds,
    )
