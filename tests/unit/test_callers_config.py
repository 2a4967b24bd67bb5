"""The callers configuration: what it accepts, what it refuses (with a message naming the caller
and the field), and the exposure rule: no callers, no listening beyond loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from meter import bootstrap, callers_config
from meter.config import ConfigError, Settings
from meter.domain.callers import ROLES, hash_token, new_token
from meter.domain.errors import InvalidToken, MethodNotAllowed, MissingCredentials
from meter.grpc.server import METHODS

TOKEN = new_token()
DIGEST = hash_token(TOKEN)


def load(text: str):  # type: ignore[no-untyped-def]
    return callers_config.load(text, "callers.toml", METHODS)


def test_roles_and_method_lists_grant_what_they_say() -> None:
    other = new_token()
    callers = load(
        f'[[caller]]\nname = "proxy-eu"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n'
        f'[[caller]]\nname = "dash"\nmethods = ["GetUsage", "GetBalance"]\ntoken_sha256 = "{hash_token(other)}"\n'
    )
    assert len(callers) == 2
    assert callers.admit(TOKEN, "Reserve").name == "proxy-eu"
    with pytest.raises(MethodNotAllowed):
        callers.admit(TOKEN, "Adjust")
    assert callers.admit(other, "GetUsage").name == "dash"
    with pytest.raises(MethodNotAllowed):
        callers.admit(other, "Reserve")
    with pytest.raises(MissingCredentials):
        callers.admit(None, "Reserve")
    with pytest.raises(InvalidToken):
        callers.admit(new_token(), "Reserve")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[[caller]\n", "not valid TOML"),
        ('[caller]\nname = "x"\n', "array of tables"),
        ('[[callers]]\nname = "x"\n', "unknown table"),
        (f'[[caller]]\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n', "name is missing"),
        ('[[caller]]\nname = "p"\nrole = "proxy"\n', "token_sha256 is missing"),
        # A misspelt key is the mistake, not the key it meant, which is missing because of it.
        (f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha265 = "{DIGEST}"\n', "did you mean token_sha256?"),
        (f'[[caller]]\nname = "p"\nrol = "proxy"\ntoken_sha256 = "{DIGEST}"\n', "['rol']; did you mean role?"),
        (f'[[caller]]\nname = "a b"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n', "name must be"),
        ('[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "abc"\n', "token_sha256 must be 64"),
        (f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST.upper()}"\n', "token_sha256 must be 64"),
        (f'[[caller]]\nname = "p"\ntoken_sha256 = "{DIGEST}"\n', "give a role"),
        (f'[[caller]]\nname = "p"\nrole = "admin"\ntoken_sha256 = "{DIGEST}"\n', "role 'admin' is not one of"),
        (f'[[caller]]\nname = "p"\nmethods = ["Reserv"]\ntoken_sha256 = "{DIGEST}"\n', "no such method(s) ['Reserv']"),
        (f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken = "x"\ntoken_sha256 = "{DIGEST}"\n', "unknown key(s)"),
        (
            f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n'
            f'[[caller]]\nname = "p"\nrole = "billing"\ntoken_sha256 = "{hash_token("t2")}"\n',
            "configured twice",
        ),
        (
            f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n'
            f'[[caller]]\nname = "q"\nrole = "billing"\ntoken_sha256 = "{DIGEST}"\n',
            "same token as another caller",
        ),
    ],
)
def test_mistakes_are_refused_with_a_message_that_names_them(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(text)
    assert complaint in str(refused.value)
    assert "callers.toml" in str(refused.value)


def test_requests_per_second_for_each_method_or_by_method() -> None:
    each = load(f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\nrequests_per_second = 50\n')
    caller = next(iter(each))
    assert (caller.rate("Reserve"), caller.rate("Commit")) == (50, 50)
    some = load(
        f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n'
        "requests_per_second = { Reserve = 500, Commit = 400 }\n"
    )
    caller = next(iter(some))
    assert (caller.rate("Reserve"), caller.rate("Commit"), caller.rate("Release")) == (500, 400, None)
    for bad, complaint in (
        ("0", "at least 1"),
        ('"50"', "at least 1"),
        ("{ Reserv = 5 }", "no such method 'Reserv'"),
        ("{ Reserve = 0 }", "at least 1"),
    ):
        with pytest.raises(ConfigError, match=complaint):
            load(f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\nrequests_per_second = {bad}\n')


def test_no_callers_means_loopback_only() -> None:
    for address in ("127.0.0.1:50051", "localhost:50051", "[::1]:50051", "127.0.0.2:1"):
        bootstrap.check_exposure(replace(Settings(), grpc_addr=address), None)
    for address in ("0.0.0.0:50051", "[::]:50051", "10.0.0.5:50051", "meter.internal:50051"):
        with pytest.raises(ConfigError) as refused:
            bootstrap.check_exposure(replace(Settings(), grpc_addr=address), None)
        assert "refuses to listen" in str(refused.value)
    callers = load(f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n')
    bootstrap.check_exposure(replace(Settings(), grpc_addr="0.0.0.0:50051"), callers)


def test_the_webhook_adapter_needs_a_billing_token_when_callers_are_configured() -> None:
    callers = load(f'[[caller]]\nname = "p"\nrole = "proxy"\ntoken_sha256 = "{DIGEST}"\n')
    with_secret = replace(Settings(), stripe_webhook_secrets=("whsec_x",))
    bootstrap.check_webhook_token(replace(Settings()), callers)  # no secret: the adapter answers 503 anyway
    with pytest.raises(ConfigError, match="needs METER_WEBHOOK_TOKEN"):
        bootstrap.check_webhook_token(with_secret, callers)
    with pytest.raises(ConfigError, match="not the token of any configured caller"):
        bootstrap.check_webhook_token(replace(with_secret, webhook_token=new_token()), callers)
    with pytest.raises(ConfigError, match="may not call CreditPurchase"):
        bootstrap.check_webhook_token(replace(with_secret, webhook_token=TOKEN), callers)


def test_meter_serve_says_why_it_will_not_listen_everywhere_without_callers() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METER_")}
    env.update(METER_GRPC_ADDR="0.0.0.0:0", METER_DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    done = subprocess.run(
        [sys.executable, "-m", "meter.cli", "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "no callers are configured" in done.stderr and "0.0.0.0:0" in done.stderr


def test_a_new_token_prints_its_hash() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meter.cli", "callers", "new-token"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    token, digest = lines["token"].strip(), lines["token_sha256"].strip()
    assert token.startswith("meter_") and len(token) > 40
    assert digest == hash_token(token)


def test_the_roles_a_file_may_name_are_the_roles_there_are() -> None:
    from typing import get_args

    from meter.callers_config import Role

    assert set(get_args(Role)) == set(ROLES)
