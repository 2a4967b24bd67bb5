"""A proxy step in Python: reserve before the model call, commit what it used after, and recognise
a refusal for lack of tokens by its ErrorInfo reason. The model call is a stand-in that answers
with the usage it is told to (--output), so the step runs without a model provider.

    python proxy.py --target 127.0.0.1:50051 --account acme --model gpt-4o \
        --input 1200 --max-output 800 --output 350

Prints one JSON line per step (as examples/node-proxy does): reserved, then committed; or refused.
METER_TOKEN, when set, is the caller's bearer token."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import dataclass

from meter.client import MeterClient, MeterRpcError


@dataclass
class Reply:
    """What a model provider answers with, as far as meter cares: the tokens the call used."""

    input_tokens: int
    output_tokens: int


async def call_the_model(prompt_tokens: int, output_tokens: int) -> Reply:
    """The stand-in for the provider's API (an OpenAI or Anthropic call in a real proxy)."""
    await asyncio.sleep(0)
    return Reply(input_tokens=prompt_tokens, output_tokens=output_tokens)


def say(step: str, **fields: object) -> None:
    print(json.dumps({"step": step, **{name: str(value) for name, value in fields.items()}}), flush=True)


async def proxy_step(
    meter: MeterClient, account: str, model: str, prompt_tokens: int, max_output: int, output: int
) -> int:
    try:
        async with meter.reserve(
            account_id=account, model=model, input_tokens=prompt_tokens, max_output_tokens=max_output
        ) as hold:
            say("reserved", reservation_id=hold.reservation_id)
            reply = await call_the_model(prompt_tokens, output)
            hold.report(input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
    except MeterRpcError as refused:
        if refused.reason == "INSUFFICIENT_TOKENS":
            say(
                "refused",
                reason=refused.reason,
                required=refused.metadata["required"],
                available=refused.metadata["available"],
            )
            return 1
        raise
    committed = hold.commit_response
    assert committed is not None  # leaving the block committed the reported usage
    say(
        "committed",
        reservation_id=hold.reservation_id,
        held_tokens=hold.held_tokens,
        charged_tokens=committed.charged_tokens,
        cost_micros=committed.cost_micros,
        available=committed.balance.available,
    )
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--account", default="acme")
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--input", type=int, default=1200)
    parser.add_argument("--max-output", type=int, default=800)
    parser.add_argument("--output", type=int, default=350)
    args = parser.parse_args()
    async with MeterClient(args.target, token=os.environ.get("METER_TOKEN") or None) as meter:
        return await proxy_step(meter, args.account, args.model, args.input, args.max_output, args.output)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
