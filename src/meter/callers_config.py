"""The callers file (METER_CALLERS_FILE), or the same TOML in METER_CALLERS:

    [[caller]]
    name = "proxy-eu"                # recorded on every ledger entry its calls write
    role = "proxy"                   # proxy | billing | operator
    token_sha256 = "9c1e...64 hex"   # `meter callers new-token` prints a token and this hash

    [[caller]]
    name = "support-dashboard"
    methods = ["GetBalance", "GetUsage", "ListLedgerEntries"]   # instead of, or besides, a role
    token_sha256 = "..."
    requests_per_second = 20          # to each method; or a table: { Reserve = 500, Commit = 500 }

Read once at start; a mistake stops the start with a message naming the caller and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from meter.config import ConfigError
from meter.domain.callers import ANY_METHOD, ROLES, Caller, Callers

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def load(text: str, source: str, methods: Collection[str]) -> Callers:
    """Callers from TOML `text` (`source` names it in errors); `methods` are the service's."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    unknown_keys = set(document) - {"caller"}
    if unknown_keys:
        raise ConfigError(f"{source}: unknown table(s) {sorted(unknown_keys)}; expected [[caller]] entries")
    entries = document.get("caller", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'caller' must be an array of tables ([[caller]])")
    callers: list[tuple[str, Caller]] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for index, entry in enumerate(entries):
        digest, caller = _caller(entry, f"{source}: caller #{index + 1}", methods)
        if caller.name in names:
            raise ConfigError(f"{source}: caller {caller.name!r} is configured twice")
        if digest in hashes:
            raise ConfigError(f"{source}: caller {caller.name!r} has the same token as another caller")
        names.add(caller.name)
        hashes.add(digest)
        callers.append((digest, caller))
    return Callers(callers)


def load_file(path: Path, methods: Collection[str]) -> Callers:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"METER_CALLERS_FILE: cannot read {path}: {error.strerror}") from None
    return load(text, str(path), methods)


def _caller(entry: Any, where: str, methods: Collection[str]) -> tuple[str, Caller]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    extra = set(entry) - {"name", "role", "methods", "token_sha256", "requests_per_second"}
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {sorted(extra)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-'")
    where = f"{where} ({name})"
    digest = entry.get("token_sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ConfigError(f"{where}: token_sha256 must be 64 lowercase hex digits (the token's SHA-256)")
    role = entry.get("role")
    listed = entry.get("methods")
    if role is None and listed is None:
        raise ConfigError(f"{where}: give a role ({', '.join(ROLES)}) or methods")
    allowed: set[str] | None = set()
    if role is not None:
        if role not in ROLES:
            raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        of_role = ROLES[role]
        allowed = None if of_role is None else set(of_role)
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed):
            raise ConfigError(f"{where}: methods must be a list of method names")
        unknown = sorted(set(listed) - set(methods))
        if unknown:
            raise ConfigError(f"{where}: no such method(s) {unknown}; MeterService has {sorted(methods)}")
        if allowed is not None:
            allowed |= set(listed)
    rates = _rates(entry.get("requests_per_second"), where, methods)
    return digest, Caller(name, None if allowed is None else frozenset(allowed), rates)


def _rates(value: Any, where: str, methods: Collection[str]) -> dict[str, int]:
    """`requests_per_second`: one number for each method, or a table of method = number."""
    if value is None:
        return {}
    table = {ANY_METHOD: value} if not isinstance(value, dict) else value
    for method, rate in table.items():
        if method != ANY_METHOD and method not in methods:
            raise ConfigError(f"{where}: requests_per_second names no such method {method!r}")
        if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
            raise ConfigError(f"{where}: requests_per_second must be whole numbers of at least 1")
    return dict(table)
