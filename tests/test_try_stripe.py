"""`meter try-stripe`, run as docs/stripe.md shows it: a pack purchase and its refund delivered to a
real meter as Stripe delivers them (a real payload, signed), with what each did to the balance;
what it prints is the doc's transcript. And without the secret it says which setting to set."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from conftest import StartMeter

from meter import catalog as catalog_file
from meter.v1 import meter_pb2 as pb
from meterlab.testbed import free_port
from support import WEBHOOK_SECRET, new_id, run_cli

ROOT = Path(__file__).resolve().parents[1]
SHOWN = "$ meter try-stripe purchase acme --pack pack_100k_tokens"


async def test_a_purchase_and_its_refund_as_stripe_delivers_them(meters: StartMeter) -> None:
    meter = await meters(catalog=catalog_file.load().without_limits())  # as make run serves it
    account = new_id()
    env = {
        "METER_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "METER_HTTP_ADDR": urlsplit(meter.webhook_url).netloc,
        "METER_GRPC_ADDR": meter.address,
    }
    code, bought, err = await run_cli("try-stripe", "purchase", account, "--pack", "pack_100k_tokens", env=env)
    assert code == 0, bought + err
    intent = re.search(r"pi_try_[0-9a-f]{24}", bought)
    assert intent is not None, bought
    code, refunded, err = await run_cli(
        "try-stripe", "refund", account, intent.group(0), "--pack", "pack_100k_tokens", env=env
    )
    assert code == 0, refunded + err
    assert masked(bought + refunded, account, meter.webhook_url) == transcript()

    balance = (await meter.stub.GetBalance(pb.GetBalanceRequest(account_id=account))).balance
    assert (balance.plan_id, balance.purchased_remaining) == ("starter", 0)
    listed = await meter.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(account_id=account))
    amounts = sorted(
        entry.amount for entry in listed.entries if entry.kind in (pb.ENTRY_KIND_PURCHASE, pb.ENTRY_KIND_REFUND)
    )
    assert amounts == [-100_000, 100_000]

    code, out, err = await run_cli("try-stripe", "purchase", account, env={**env, "METER_STRIPE_WEBHOOK_SECRET": ""})
    assert code == 2 and "METER_STRIPE_WEBHOOK_SECRET is not set" in out + err
    elsewhere = f"127.0.0.1:{free_port()}"
    code, out, err = await run_cli("try-stripe", "purchase", account, env={**env, "METER_HTTP_ADDR": elsewhere})
    assert code == 1 and f"nothing answers at http://{elsewhere}/webhooks/stripe" in out and "Traceback" not in err


def transcript() -> list[str]:
    """The lines docs/stripe.md shows the two commands printing (the commands left out)."""
    doc = (ROOT / "docs" / "stripe.md").read_text()
    block = doc.split(SHOWN, 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if not line.startswith("$ ")]
    return masked("\n".join(lines), "acme", "http://127.0.0.1:8080/webhooks/stripe")


def masked(output: str, account: str, webhook_url: str) -> list[str]:
    text = output.replace(webhook_url, "http://127.0.0.1:8080/webhooks/stripe").replace(account, "acme")
    text = re.sub(r"evt_try_[0-9a-f]{24}", "evt_try_…", text)
    text = re.sub(r"pi_try_[0-9a-f]{24}", "pi_try_…", text)
    return text.strip().splitlines()
