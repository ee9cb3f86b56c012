"""Session mechanics: chunks after a prefix, rollback, replay, stateless forwards,
and the transformers 5.x pitfalls from shared/notes/transformers.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plexus.errors import ModelError, SessionError, UnsupportedModelError
from plexus.models import SpanSession, load_span, open_model
from plexus.models.resolve import load_config
from plexus.models.session import stateless_forward
from tests.model_fixtures import FAMILY_NAMES

TOL = 1e-4  # fp32; replay and chunking change reduction order (~1e-6 relative)


def hidden_states(folder: Path, batch: int, tokens: int, seed: int) -> torch.Tensor:
    size = load_config(folder).hidden_size
    return torch.randn(batch, tokens, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_chunk_after_prefix_equals_one_prefill(model_dirs: dict[str, Path], family: str) -> None:
    # Pitfall 3: a multi-token chunk on a non-empty cache needs a real mask.
    span = load_span(model_dirs[family], 1, 4, progress=False)
    x = hidden_states(model_dirs[family], 2, 12, seed=3)
    whole = SpanSession(span).step(x)
    session = SpanSession(span)
    first = session.step(x[:, :7])
    second = session.step(x[:, 7:])
    assert (torch.cat([first, second], dim=1) - whole).abs().max().item() <= TOL


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cache_has_one_slot_per_block_of_the_span(model_dirs: dict[str, Path], family: str) -> None:
    # Pitfall 2: layers built with global indices make the cache report the wrong length.
    span = load_span(model_dirs[family], 3, 5, progress=False)
    session = SpanSession(span)
    session.step(hidden_states(model_dirs[family], 1, 4, seed=4))
    assert len(session.cache.layers) == 3
    assert session.cache.get_seq_length() == 4
    assert session.length == 4


def test_attention_implementation_is_set(model_dirs: dict[str, Path]) -> None:
    # Pitfall 1: AutoConfig leaves it None, and padding masks are then silently dropped.
    assert load_config(model_dirs["tiny"])._attn_implementation == "sdpa"
    span = load_span(model_dirs["tiny"], 0, 1, progress=False)
    assert span.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_rollback_then_continue_equals_fresh_session(
    model_dirs: dict[str, Path], family: str
) -> None:
    span = load_span(model_dirs[family], 0, 2, progress=False)
    x = hidden_states(model_dirs[family], 1, 16, seed=5)
    other = hidden_states(model_dirs[family], 1, 3, seed=6)
    session = SpanSession(span)
    session.step(x[:, :6])
    for t in range(6, 16):  # decode past the sliding window
        session.step(x[:, t : t + 1])
    session.rollback(8)
    assert session.length == 8
    after_rollback = session.step(other)
    fresh = SpanSession(span)
    fresh.step(x[:, :8])
    expected = fresh.step(other)
    assert (after_rollback - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_rebuilt_session_continues_like_the_original(
    model_dirs: dict[str, Path], family: str
) -> None:
    span = load_span(model_dirs[family], 2, 5, progress=False)
    x = hidden_states(model_dirs[family], 2, 14, seed=7)
    mask = torch.ones(2, 14, dtype=torch.long)
    mask[1, :3] = 0  # left padding in the second row
    original = SpanSession(span)
    original.step(x[:, :9], mask[:, :9])
    for t in range(9, 13):
        original.step(x[:, t : t + 1], mask[:, t : t + 1])
    history = original.history()
    assert history is not None
    rebuilt, _ = SpanSession.from_history(span, *history)
    step = x[:, 13:14]
    a = original.step(step, mask[:, 13:14])
    b = rebuilt.step(step, mask[:, 13:14])
    assert (a - b).abs().max().item() <= TOL


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_stateless_forward_equals_session_outputs(model_dirs: dict[str, Path], family: str) -> None:
    span = load_span(model_dirs[family], 0, 3, progress=False)
    x = hidden_states(model_dirs[family], 1, 10, seed=8)
    session = SpanSession(span)
    outs = [session.step(x[:, :4])] + [session.step(x[:, t : t + 1]) for t in range(4, 10)]
    audit = stateless_forward(span, x, torch.ones(1, 10, dtype=torch.long))
    assert (torch.cat(outs, dim=1) - audit).abs().max().item() <= TOL


def test_session_rejects_bad_inputs_and_stays_usable(model_dirs: dict[str, Path]) -> None:
    span = load_span(model_dirs["tiny"], 0, 1, progress=False)
    session = SpanSession(span)
    x = hidden_states(model_dirs["tiny"], 2, 3, seed=9)
    session.step(x)
    with pytest.raises(SessionError):
        session.step(torch.zeros(2, 1, 7))  # wrong hidden size
    with pytest.raises(SessionError):
        session.step(x[:1, :1])  # wrong batch size
    with pytest.raises(SessionError):
        session.step(x[:, :1], torch.ones(2, 2))  # mask does not match
    with pytest.raises(SessionError):
        session.rollback(4)
    assert session.length == 3
    session.step(x[:, :1])
    assert session.length == 4


def test_span_outside_model_is_refused(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="outside"):
        load_span(model_dirs["tiny"], 6, 8, progress=False)


def test_unsupported_architecture_names_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    files = open_model(tmp_path)
    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2"):
        load_span(files, 0, 0, progress=False)


def test_sharded_checkpoint_reads_only_the_needed_shards(model_dirs: dict[str, Path]) -> None:
    files = open_model(model_dirs["llama"])
    shards = set(files.weight_map.values())
    assert len(shards) > 2, "the llama fixture must be sharded"
    span = load_span(files, 2, 2, progress=False)
    assert span.num_blocks == 1


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_part_of_a_span_equals_a_span_of_those_blocks(
    model_dirs: dict[str, Path], family: str
) -> None:
    # A server holding blocks 0-5 can serve a client that only needs blocks 2-4.
    whole = load_span(model_dirs[family], 0, 5, progress=False)
    part = load_span(model_dirs[family], 2, 4, progress=False)
    x = hidden_states(model_dirs[family], 1, 12, seed=10)
    on_whole, on_part = SpanSession(whole, range(2, 5)), SpanSession(part)
    a = [on_whole.step(x[:, :5])] + [on_whole.step(x[:, t : t + 1]) for t in range(5, 12)]
    b = [on_part.step(x[:, :5])] + [on_part.step(x[:, t : t + 1]) for t in range(5, 12)]
    assert (torch.cat(a, 1) - torch.cat(b, 1)).abs().max().item() <= TOL
    audit = stateless_forward(whole, x, torch.ones(1, 12, dtype=torch.long), range(2, 5))
    assert (audit - torch.cat(b, 1)).abs().max().item() <= TOL
    on_whole.rollback(6)
    assert on_whole.length == 6
