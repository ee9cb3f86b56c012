"""A contiguous span of decoder blocks, run on hidden states.

`SpanModel.forward` is the whole forward pass of a span: masks against this span's own
cache, rotary embeddings, then the blocks in order (a decode step that needs no mask
calls the blocks' operations directly: `decode_step`). The blocks are built with *local*
indices 0..n-1 and a span config whose `num_hidden_layers` is n, so a fresh
`DynamicCache(config=span.config)` has exactly one slot per block (transformers pitfall:
a global index would make the cache allocate, and report, the wrong layers).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from plexus.models.decode_step import LayerPlan, decode_layer, fits
from plexus.models.families import Family, family_of, layer_types


def span_config(config: PretrainedConfig, start: int, end: int) -> PretrainedConfig:
    """A config describing blocks start..end (inclusive) as a model of their own."""
    cfg = copy.deepcopy(config)
    types = layer_types(config)[start : end + 1]
    cfg.num_hidden_layers = end - start + 1
    if getattr(config, "layer_types", None):
        cfg.layer_types = types
    if getattr(cfg, "_attn_implementation", None) is None:
        cfg._attn_implementation = "sdpa"  # pitfall: None silently drops padding masks
    return cfg


def position_ids_from_mask(mask2d: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Positions of the last `new_tokens` columns, by the same rule as `generate`."""
    positions = (mask2d.long().cumsum(-1) - 1).masked_fill(mask2d == 0, 0)
    return positions[:, -new_tokens:]


class SpanModel(nn.Module):
    """Blocks `start..end` (inclusive, global numbering) of a causal LM."""

    def __init__(self, config: PretrainedConfig, start: int, end: int) -> None:
        super().__init__()
        if not 0 <= start <= end < config.num_hidden_layers:
            raise ValueError(f"span {start}-{end} outside 0-{config.num_hidden_layers - 1}")
        self.family: Family = family_of(config)
        self.start, self.end = start, end
        self.config = span_config(config, start, end)
        self.layer_types = layer_types(self.config)
        self.layers = nn.ModuleList(
            self.family.decoder_layer(self.config, i) for i in range(self.config.num_hidden_layers)
        )
        self.rotary_emb = self.family.rotary_embedding(config=self.config)
        self._plans: list[LayerPlan | None] | None = None  # see `decode_plans`

    def decode_plans(self) -> list[LayerPlan | None]:
        """Per layer, its `decode_step` plan, or None where that step does not apply.
        Built once; moving or reloading the span (`_apply`, `load_state_dict`) drops them.
        (Assigning a new parameter to one of its modules by hand does not.)"""
        if self._plans is None:
            self._plans = [LayerPlan.of(x) if fits(x) else None for x in self.layers]
        return self._plans

    def forget_plans(self) -> None:
        self._plans = None

    def _apply(self, fn: Any, recurse: bool = True) -> SpanModel:
        self.forget_plans()
        return super()._apply(fn, recurse)  # type: ignore[no-any-return]

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.forget_plans()
        return super().load_state_dict(*args, **kwargs)

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.config)

    @torch.inference_mode()
    def forward(
        self,
        hidden: torch.Tensor,
        mask2d: torch.Tensor,
        cache: Cache | None = None,
        blocks: range | None = None,
    ) -> torch.Tensor:
        """Run `hidden` [B, T, H], the last T tokens of `mask2d` [B, past+T], through the span.

        `mask2d` covers the cached past and the new tokens (1 = real, 0 = padding). With a
        cache, the new keys/values are appended to it. `blocks` (local indices) runs only
        part of the span; its cache slots are the blocks' own, so a cache must always be
        used with the same `blocks`.
        """
        blocks = blocks if blocks is not None else range(len(self.layers))
        new_tokens = hidden.shape[1]
        position_ids = position_ids_from_mask(mask2d, new_tokens)
        kinds = [self.layer_types[i] for i in blocks]
        masks: dict[str, torch.Tensor | None] = {}
        for kind, make_mask in (
            ("full_attention", create_causal_mask),
            ("sliding_attention", create_sliding_window_causal_mask),
        ):
            if kind not in kinds:
                continue
            if kind == "full_attention" and self._sees_everything(mask2d, new_tokens):
                masks[kind] = None  # what create_causal_mask returns, 0.25 ms sooner
                continue
            masks[kind] = make_mask(  # sized by the first cache slot of that kind
                config=self.config,
                inputs_embeds=hidden,
                attention_mask=mask2d,
                cache=cache,
                position_ids=position_ids,
                layer_idx=blocks[kinds.index(kind)],
            )
        position_embeddings = self.rotary_emb(hidden, position_ids)
        sdpa = self.config._attn_implementation == "sdpa"
        decode = new_tokens == 1 and cache is not None and sdpa
        if decode:  # the rotary tables as decode_layer takes them
            cos, sin = (t.unsqueeze(1) for t in position_embeddings)
            plans = self.decode_plans()
        for i, kind in zip(blocks, kinds, strict=True):
            if decode and masks[kind] is None:  # what the layer would run, unwrapped
                plan = plans[i]
                if plan is not None and not plan.layer.training:
                    hidden = decode_layer(plan, hidden, cos, sin, cache)  # type: ignore[arg-type]
                    continue
            hidden = self.layers[i](
                hidden,
                attention_mask=masks[kind],
                position_ids=position_ids,
                cache=cache,
                use_cache=cache is not None,
                position_embeddings=position_embeddings,
            )
        return hidden

    def _sees_everything(self, mask2d: torch.Tensor, new_tokens: int) -> bool:
        """Whether one new token of unpadded sequences attends to every cached position
        under full attention: transformers' sdpa masking then gives no mask at all, and
        building it only to learn that costs each decode step 0.23-0.27 ms on a CPU
        (measured on the 2-core build machine)."""
        return new_tokens == 1 and self.config._attn_implementation == "sdpa" and bool(mask2d.all())

    @property
    def num_blocks(self) -> int:
        return self.end - self.start + 1

    @property
    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())
