"""`plexus demo`: see Plexus split a model and run it, on this machine, offline."""

from __future__ import annotations

import argparse
import sys
import time

from plexus.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="split the embedded tiny model into spans and generate through them",
        description="Create plexus-tiny under the data dir, split its 8 blocks into spans, "
        "generate greedily through the chain and check the tokens against transformers' own "
        "generate() on the whole model. Runs offline in seconds.",
    )
    parser.add_argument("--prompt", default="Hello, Plexus!", help="user message to answer")
    parser.add_argument(
        "--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)"
    )
    parser.add_argument(
        "--spans", type=int, default=3, help="how many spans to split the model into (1-8)"
    )
    options.add_common(parser, network=False, reporting=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from plexus.errors import ConfigError
    from plexus.models import TINY_MODEL_NAME, load_head, load_span, open_model
    from plexus.models.local_chain import LocalChain

    transformers.utils.logging.disable_progress_bar()
    files = open_model(TINY_MODEL_NAME, options.data_dir(args))
    n = files.config.num_hidden_layers
    if not 1 <= args.spans <= n:
        raise ConfigError(f"--spans must be between 1 and {n}")
    bounds = [round(i * n / args.spans) for i in range(args.spans + 1)]
    ranges = [(bounds[i], bounds[i + 1] - 1) for i in range(args.spans)]
    say = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    say(f"model {TINY_MODEL_NAME} ({files.model_id[:19]}...) at {files.folder}")
    say("spans: " + ", ".join(f"blocks {a}-{b}" for a, b in ranges))

    tokenizer = AutoTokenizer.from_pretrained(files.folder)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": args.prompt}], add_generation_prompt=True, tokenize=False
    )
    input_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    spans = [load_span(files, a, b, progress=False) for a, b in ranges]
    chain = LocalChain(load_head(files, progress=False), spans)
    started = time.perf_counter()
    result = chain.greedy(input_ids, max_new_tokens=args.max_new_tokens)
    elapsed = time.perf_counter() - started
    token_ids = result.token_ids[0].tolist()

    reference = AutoModelForCausalLM.from_pretrained(files.folder, dtype=torch.float32).eval()
    expected = reference.generate(
        input_ids,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        do_sample=False,
        pad_token_id=files.config.pad_token_id,
    )[0, input_ids.shape[1] :].tolist()
    matches = token_ids == expected
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    report = {
        "model": TINY_MODEL_NAME,
        "model_id": files.model_id,
        "spans": [list(r) for r in ranges],
        "token_ids": token_ids,
        "text": text,
        "tokens_per_s": round(len(token_ids) / elapsed, 1),
        "matches_transformers": matches,
    }
    if args.json:
        options.emit_json(report)
    else:
        print(f"generated ({report['tokens_per_s']} tokens/s): {text!r}")
        verdict = "identical to" if matches else "DIFFERENT from"
        print(f"token ids {verdict} transformers.generate on the whole model")
    return 0 if matches else 1
