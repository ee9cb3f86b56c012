"""Splitting a model into spans reproduces the full `transformers` model exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.masking_utils import create_causal_mask

import plexus.models.span as span_module
from plexus.models import decode_step, load_head, load_span
from plexus.models.local_chain import LocalChain
from plexus.models.resolve import load_config
from plexus.models.span import position_ids_from_mask
from tests.model_fixtures import FAMILY_NAMES

DECODE_STEPS = 24
TOLERANCE = 1e-4


def split_points(n_layers: int, parts: int) -> list[tuple[int, int]]:
    bounds = [round(i * n_layers / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]


def reference_model(folder: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


def chain(folder: Path, parts: int) -> LocalChain:
    n = load_config(folder).num_hidden_layers
    spans = [load_span(folder, a, b, progress=False) for a, b in split_points(n, parts)]
    return LocalChain(load_head(folder, progress=False), spans)


def check_against_generate(
    folder: Path, parts: int, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> None:
    model = reference_model(folder)
    expected = model.generate(
        input_ids,
        attention_mask=attention_mask,
        max_new_tokens=DECODE_STEPS,
        min_new_tokens=DECODE_STEPS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        eos_token_id=None,
        pad_token_id=model.config.pad_token_id or 0,
    )
    got = chain(folder, parts).greedy(input_ids, attention_mask, max_new_tokens=DECODE_STEPS)
    new_tokens = expected.sequences[:, input_ids.shape[1] :]
    assert torch.equal(got.token_ids, new_tokens)
    assert len(got.step_logits) == DECODE_STEPS
    for step, (ours, theirs) in enumerate(zip(got.step_logits, expected.logits, strict=True)):
        diff = (ours - theirs.float()).abs().max().item()
        assert diff <= TOLERANCE, f"step {step}: max abs logit difference {diff}"
    # The sequence must not be trivially constant, or equality would prove little.
    assert len(set(new_tokens[0].tolist())) > 2


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_single_prompt_matches_generate(
    model_dirs: dict[str, Path], family: str, parts: int
) -> None:
    torch.manual_seed(0)
    ids = torch.randint(3, 90, (1, 7))
    check_against_generate(model_dirs[family], parts, ids, torch.ones_like(ids))


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_left_padded_batch_matches_generate(
    model_dirs: dict[str, Path], family: str, parts: int
) -> None:
    torch.manual_seed(1)
    lengths = [9, 4, 6]
    width = max(lengths)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, 90, (n,))
        mask[row, width - n :] = 1
    check_against_generate(model_dirs[family], parts, ids, mask)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_prefill_logits_match_full_forward(model_dirs: dict[str, Path], family: str) -> None:
    folder = model_dirs[family]
    ids = torch.randint(3, 90, (2, 11), generator=torch.Generator().manual_seed(2))
    full = reference_model(folder)(ids).logits
    lc = chain(folder, 3)
    hidden = lc.head.embed(ids)
    for span in lc.spans:
        hidden = span(hidden, torch.ones_like(ids))
    assert (lc.head.logits(hidden) - full).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_decode_steps_skip_only_the_mask_transformers_would_not_build(
    model_dirs: dict[str, Path], family: str
) -> None:
    """A decode step of unpadded sequences passes no full-attention mask (as transformers'
    sdpa masking decides); the outputs are bit for bit those of building it."""
    folder = model_dirs[family]
    n = load_config(folder).num_hidden_layers
    span = load_span(folder, 0, n - 1, progress=False)
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 6, span.config.hidden_size, generator=gen)
    steps = [torch.randn(2, 1, span.config.hidden_size, generator=gen) for _ in range(4)]
    padded = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    for prefix_mask in (torch.ones(2, 6, dtype=torch.long), padded):
        outputs = []
        for skip in (True, False):
            if skip:
                span.__dict__.pop("_sees_everything", None)
            else:
                span._sees_everything = lambda m, t: False  # type: ignore[method-assign]
            cache = span.new_cache()
            mask = prefix_mask
            outs = [span(hidden, mask, cache)]
            for x in steps:
                mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
                if skip and bool(mask.all()):  # what transformers decides for this step
                    assert (
                        create_causal_mask(
                            config=span.config,
                            inputs_embeds=x,
                            attention_mask=mask,
                            cache=cache,
                            position_ids=position_ids_from_mask(mask, 1),
                            layer_idx=0,
                        )
                        is None
                    )
                outs.append(span(x, mask, cache))
            outputs.append(outs)
        for fast, built in zip(*outputs, strict=True):
            assert torch.equal(fast, built)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_unmasked_decode_steps_run_the_layers_operations_bit_for_bit(
    model_dirs: dict[str, Path], family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decode steps that need no mask call the layers' operations directly
    (`decode_step`); every output is bit for bit that of transformers' own layers, for
    unpadded and padded batches, past the sliding windows, with grouped-query attention."""
    folder = model_dirs[family]
    n = load_config(folder).num_hidden_layers
    span = load_span(folder, 0, n - 1, progress=False)
    assert span.layers[0].self_attn.num_key_value_groups > 1  # grouped attention covered
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 6, span.config.hidden_size, generator=gen)
    steps = [torch.randn(2, 1, span.config.hidden_size, generator=gen) for _ in range(8)]
    padded = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    direct_calls = 0

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        nonlocal direct_calls
        direct_calls += 1
        return decode_step.decode_layer(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(span_module, "decode_layer", counted)
    for prefix_mask in (torch.ones(2, 6, dtype=torch.long), padded):
        outputs = []
        for direct in (True, False):
            fits = decode_step.fits if direct else lambda _: False
            monkeypatch.setattr(span_module, "fits", fits)
            span.forget_plans()
            cache = span.new_cache()
            mask = prefix_mask
            outs = [span(hidden, mask, cache)]
            for x in steps:
                mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
                outs.append(span(x, mask, cache))
            outputs.append(outs)
        for direct, wrapped in zip(*outputs, strict=True):
            assert torch.equal(direct, wrapped)
    if family in ("tiny", "llama"):  # full attention, unpadded: every block, every step
        assert direct_calls == len(steps) * n
    if family != "mistral":  # every Mistral layer slides past its window: masked
        assert direct_calls > 0


def test_decode_plans_follow_the_weights_when_the_span_is_moved_or_reloaded(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plans hold the layers' weight tensors: converting the span (`.to`) or loading
    new weights into it must not leave decode steps on the old ones."""
    folder = model_dirs["tiny"]
    n = load_config(folder).num_hidden_layers
    span = load_span(folder, 0, n - 1, progress=False)
    gen = torch.Generator().manual_seed(7)
    prefix = torch.randn(1, 4, span.config.hidden_size, generator=gen)
    step = torch.randn(1, 1, span.config.hidden_size, generator=gen)
    mask = torch.ones(1, 5, dtype=torch.long)

    def decode(direct: bool) -> torch.Tensor:
        if not direct:  # through transformers' layers: no plans
            monkeypatch.setattr(span_module, "fits", lambda _: False)
            span.forget_plans()
        dtype = span.layers[0].mlp.up_proj.weight.dtype
        cache = span.new_cache()
        span(prefix.to(dtype), mask[:, :4], cache)
        out = span(step.to(dtype), mask, cache)
        assert (span.decode_plans()[0] is not None) == direct
        if not direct:
            monkeypatch.undo()
            span.forget_plans()
        return out

    decode(True)  # builds the plans on the fp32 weights
    span.to(torch.bfloat16)
    direct = decode(True)
    assert direct.dtype == torch.bfloat16 and torch.equal(direct, decode(False))

    decode(True)  # plans on the bf16 weights
    state = {k: torch.randn_like(v) for k, v in span.state_dict().items()}
    span.load_state_dict(state, assign=True)  # new tensors, not new values in the old ones
    direct = decode(True)
    assert torch.equal(direct, decode(False))
