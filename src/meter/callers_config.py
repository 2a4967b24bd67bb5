"""The callers file (METER_CALLERS_FILE), or the same TOML in METER_CALLERS:

    [[caller]]
    name = "proxy-eu"                # recorded on every ledger entry its calls write
    role = "proxy"                   # proxy | billing | storefront | operator
    token_sha256 = "9c1e...64 hex"   # `meter callers new-token` prints a token and this hash

    [[caller]]
    name = "support-dashboard"
    methods = ["GetBalance", "GetUsage", "ListLedgerEntries"]   # instead of, or besides, a role
    token_sha256 = "..."
    requests_per_second = 20          # to each method; or a table: { Reserve = 500, Commit = 500 }

Read once at start; a mistake stops the start with a message naming the caller and the field.
The fields are declared once, in `CallerEntry`; schemas/callers.schema.json is written from it
(scripts/generate_reference.py) for editors: a callers file that starts with
`#:schema ./schemas/callers.schema.json` is checked and completed as it is typed (Taplo).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from meter.config import ConfigError
from meter.domain.callers import ANY_METHOD, ROLES, Caller, Callers

Role = Literal["proxy", "billing", "storefront", "operator"]
Rate = Annotated[StrictInt, Field(ge=1)]


class CallerEntry(BaseModel):
    """One [[caller]]: what the file may say of it (the JSON Schema editors read is written from
    this; the checks across callers and against the service's methods are in `load`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="recorded on every ledger entry its calls write",
    )
    token_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="the SHA-256 of its bearer token: `meter callers new-token` prints both"
    )
    role: Role | None = Field(None, description="what its job needs: proxy, billing, storefront or operator (all)")
    methods: list[str] | None = Field(None, description="methods it may call, instead of or besides a role")
    requests_per_second: Rate | dict[str, Rate] | None = Field(
        None, description="requests per second to each method, or a table of method = rate"
    )


class CallersFile(BaseModel):
    """The callers file: an array of [[caller]] tables."""

    model_config = ConfigDict(extra="forbid", strict=True, title="meter callers file")

    caller: list[CallerEntry] = Field(default_factory=list)


# What each field's mistake is called, as an operator reads it.
_COMPLAINTS = {
    "name": "name must be 1-64 letters, digits, '.', '_' or '-'",
    "token_sha256": "token_sha256 must be 64 lowercase hex digits (the token's SHA-256)",
    "methods": "methods must be a list of method names",
    "requests_per_second": "requests_per_second must be whole numbers of at least 1",
}


def load(text: str, source: str, methods: Collection[str]) -> Callers:
    """Callers from TOML `text` (`source` names it in errors); `methods` are the service's."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    unknown_keys = set(document) - {"caller"}
    if unknown_keys:
        raise ConfigError(f"{source}: unknown table(s) {sorted(unknown_keys)}; expected [[caller]] entries")
    if not isinstance(document.get("caller", []), list):
        raise ConfigError(f"{source}: 'caller' must be an array of tables ([[caller]])")
    try:
        parsed = CallersFile.model_validate(document)
    except ValidationError as invalid:
        raise ConfigError(_complaint(source, document, invalid)) from None
    callers: list[tuple[str, Caller]] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for index, entry in enumerate(parsed.caller):
        caller = _caller(entry, f"{source}: caller #{index + 1} ({entry.name})", methods)
        if caller.name in names:
            raise ConfigError(f"{source}: caller {caller.name!r} is configured twice")
        if entry.token_sha256 in hashes:
            raise ConfigError(f"{source}: caller {caller.name!r} has the same token as another caller")
        names.add(caller.name)
        hashes.add(entry.token_sha256)
        callers.append((entry.token_sha256, caller))
    return Callers(callers)


def load_file(path: Path, methods: Collection[str]) -> Callers:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"METER_CALLERS_FILE: cannot read {path}: {error.strerror}") from None
    return load(text, str(path), methods)


def _complaint(source: str, document: Mapping[str, Any], invalid: ValidationError) -> str:
    """The first mistake, named as the file names it: which caller, which key, what is wrong. An
    unknown key comes first: a misspelt key also leaves the key it meant missing, and the missing
    one is not the mistake to fix."""
    errors = invalid.errors()
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    location = error["loc"]
    if len(location) < 2 or location[0] != "caller":
        return f"{source}: {error['msg']}"
    index = int(location[1])
    entry = document["caller"][index]
    if not isinstance(entry, dict):
        return f"{source}: caller #{index + 1}: must be a table"
    name = entry.get("name")
    where = f"{source}: caller #{index + 1}" + (f" ({name})" if isinstance(name, str) else "")
    if error["type"] == "extra_forbidden":
        known = list(CallerEntry.model_fields)
        extra = sorted(set(entry) - set(known))
        meant = [match for key in extra for match in difflib.get_close_matches(key, known, n=1)]
        return f"{where}: unknown key(s) {extra}" + (f"; did you mean {', '.join(meant)}?" if meant else "")
    field = str(location[2]) if len(location) > 2 else ""
    if error["type"] == "missing":
        return f"{where}: {field} is missing"
    if field == "role":
        return f"{where}: role {entry.get('role')!r} is not one of {', '.join(ROLES)}"
    return f"{where}: {_COMPLAINTS.get(field, error['msg'])}"


def _caller(entry: CallerEntry, where: str, methods: Collection[str]) -> Caller:
    if entry.role is None and entry.methods is None:
        raise ConfigError(f"{where}: give a role ({', '.join(ROLES)}) or methods")
    allowed: set[str] | None = set()
    if entry.role is not None:
        of_role = ROLES[entry.role]
        allowed = None if of_role is None else set(of_role)
    if entry.methods is not None:
        unknown = sorted(set(entry.methods) - set(methods))
        if unknown:
            raise ConfigError(f"{where}: no such method(s) {unknown}; MeterService has {sorted(methods)}")
        if allowed is not None:
            allowed |= set(entry.methods)
    rates = _rates(entry.requests_per_second, where, methods)
    return Caller(entry.name, None if allowed is None else frozenset(allowed), rates)


def _rates(value: int | dict[str, int] | None, where: str, methods: Collection[str]) -> dict[str, int]:
    """`requests_per_second`: one number for each method, or a table of method = number."""
    if value is None:
        return {}
    table = {ANY_METHOD: value} if isinstance(value, int) else value
    for method in table:
        if method != ANY_METHOD and method not in methods:
            raise ConfigError(f"{where}: requests_per_second names no such method {method!r}")
    return dict(table)
