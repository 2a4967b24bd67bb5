"""The catalog: models (prices, weights), token packs, plans and the label keys usage is summed by,
from one versioned TOML file.

It is the single source of truth for prices: nothing else in the code names a price, a weight
or an allowance. Loaded and validated once at start; a malformed file stops the service rather
than charging with wrong numbers.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from meter.domain.accounts import Account
from meter.domain.amounts import INT64_MAX, millionths
from meter.domain.errors import PlanMismatch, UnknownModel, UnknownPack, UnknownPlan, UnknownPrice
from meter.domain.holds import ExpiredHolds, Pricing
from meter.domain.limits import PlanLimits, RateLimits
from meter.domain.plans import CancelledAllowance

# The plan of an account without a subscription (and of one whose subscription ended), when the
# catalog names none: catalogs written before `default_plan` existed had a plan "free".
DEFAULT_PLAN = "free"

T = TypeVar("T", "Model", "Pack", "Plan")


class CatalogError(ValueError):
    """The catalog file is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class Model:
    id: str
    provider: str
    input_price: int  # micro-USD per million input tokens
    output_price: int  # micro-USD per million output tokens
    input_weight: int  # millionths of a balance token per input token
    output_weight: int  # millionths of a balance token per output token
    # The token classes providers bill apart, each with its own price and weight: cache reads
    # (cached input), cache writes and reasoning. Left out of the catalog, each is priced as the
    # class it is billed as otherwise (input, input, output).
    cached_input_price: int = 0
    cache_write_price: int = 0
    reasoning_price: int = 0
    cached_input_weight: int = 0
    cache_write_weight: int = 0
    reasoning_weight: int = 0


@dataclass(frozen=True)
class Pack:
    id: str
    tokens: int
    price_minor: int
    currency: str
    active: bool
    name: str = ""  # what the customer sees on Stripe's Checkout page


@dataclass(frozen=True)
class Plan:
    id: str
    monthly_allowance_tokens: int
    per_account: bool
    limits: RateLimits = RateLimits()
    # The Stripe price ids a subscription to this plan is sold at: a subscription's plan is the
    # one its price maps to, whatever its metadata says.
    stripe_prices: tuple[str, ...] = ()
    # What a hold still open at its expiry does on this plan (an account may have its own).
    expired_holds: ExpiredHolds = ExpiredHolds.RELEASE
    # What a cancelled subscription to this plan does to the allowance left of its paid period.
    cancelled_allowance: CancelledAllowance = CancelledAllowance.ENDS_NOW


@dataclass(frozen=True)
class Catalog:
    version: str
    models: Mapping[str, Model]
    packs: Mapping[str, Pack]
    plans: Mapping[str, Plan]
    # The label keys whose values usage is summed by (GetUsage groups and filters by them): each
    # distinct combination of their values is a row of each day's totals, so they are declared,
    # and a key with many values (a session id) costs rows in proportion.
    usage_label_keys: tuple[str, ...] = ()
    # The plan of every account without a subscription, and of one whose subscription ended.
    default_plan: str = DEFAULT_PLAN

    def pricing(self, model_id: str, labels: Mapping[str, str] | None = None) -> Pricing:
        """What a call of this model with these labels is pinned to at Reserve."""
        pricing = self._pricing_by_model.get(model_id)
        if pricing is None:
            raise UnknownModel(model_id[:200])
        summed = {key: value for key, value in (labels or {}).items() if key in self.usage_label_keys}
        return replace(pricing, usage_labels=summed) if summed else pricing

    @cached_property
    def _pricing_by_model(self) -> Mapping[str, Pricing]:
        """Each model's pricing with no labels summed: built once, not at every Reserve."""
        return {
            model.id: Pricing(
                self.version,
                input_weight=model.input_weight,
                output_weight=model.output_weight,
                input_price=model.input_price,
                output_price=model.output_price,
                cached_input_weight=model.cached_input_weight,
                cache_write_weight=model.cache_write_weight,
                reasoning_weight=model.reasoning_weight,
                cached_input_price=model.cached_input_price,
                cache_write_price=model.cache_write_price,
                reasoning_price=model.reasoning_price,
            )
            for model in self.models.values()
        }

    def pack(self, pack_id: str) -> Pack:
        pack = self.packs.get(pack_id)
        if pack is None or not pack.active:
            raise UnknownPack(pack_id[:200])
        return pack

    def without_limits(self) -> Catalog:
        """This catalog with no plan rate-limited: for runs that measure or check metering
        itself (the test suite's default servers, `meter chaos`), where a limit would only get
        in the way."""
        plans = {plan_id: replace(plan, limits=RateLimits()) for plan_id, plan in self.plans.items()}
        return replace(self, plans=plans)

    def plan_limits(self) -> PlanLimits:
        """Every plan's rate limits, as the database takes them (a plan the catalog no longer has
        has none)."""
        return PlanLimits.of({plan.id: plan.limits for plan in self.plans.values()})

    def plan(self, plan_id: str) -> Plan:
        plan = self.plans.get(plan_id)
        if plan is None:
            raise UnknownPlan(plan_id[:200])
        return plan

    def expired_holds(self, account: Account) -> ExpiredHolds:
        """What the account's holds do at expiry: its own setting, else its plan's (release for a
        plan no longer in the catalog)."""
        if account.expired_holds is not None:
            return account.expired_holds
        plan = self.plans.get(account.plan_id)
        return plan.expired_holds if plan is not None else ExpiredHolds.RELEASE

    def plan_sold_at(self, stripe_prices: Sequence[str], plan_id: str = "") -> Plan:
        """The plan a subscription sold at these Stripe prices is on. Prices the catalog does not
        map (add-ons, metered items) are not plans; exactly one plan must be among them, and a
        plan named beside them (the subscription's metadata) must be that one."""
        found = {self._plan_by_price[p] for p in stripe_prices if p in self._plan_by_price}
        if not found:
            raise UnknownPrice(list(stripe_prices))
        if len(found) > 1:
            raise PlanMismatch(plan_id, sorted(found))
        (sold,) = found
        if plan_id and plan_id != sold:
            raise PlanMismatch(plan_id, [sold])
        return self.plan(sold)

    def allowance_sold_at(self, stripe_price: str) -> int:
        """The allowance a subscription at this price gets each period (0: no plan of ours)."""
        plan = self.plans.get(self._plan_by_price.get(stripe_price, ""))
        return plan.monthly_allowance_tokens if plan else 0

    @property
    def _plan_by_price(self) -> Mapping[str, str]:
        return {price: plan.id for plan in self.plans.values() for price in plan.stripe_prices}


def default_path() -> Path:
    return Path(str(resources.files("meter") / "catalog.toml"))


def load(path: Path | None = None) -> Catalog:
    path = path or default_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    return parse(data, source=str(path))


def parse(data: Mapping[str, Any], source: str = "catalog") -> Catalog:
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise CatalogError(f"{source}: `version` must be a non-empty string")
    models = _unique(source, "models", [_model(source, m) for m in _entries(data, "models", source)])
    packs = _unique(source, "packs", [_pack(source, p) for p in _entries(data, "packs", source)])
    plans = _unique(source, "plans", [_plan(source, p) for p in _entries(data, "plans", source)])
    default_plan = data.get("default_plan", DEFAULT_PLAN)
    if not isinstance(default_plan, str) or default_plan not in plans:
        raise CatalogError(
            f"{source}: `default_plan` must name a plan of the catalog (accounts without a subscription are on it;"
            f" left out, it is {DEFAULT_PLAN!r})"
        )
    if plans[default_plan].per_account or plans[default_plan].stripe_prices:
        raise CatalogError(f"{source}: the default plan {default_plan!r} is free: no Stripe prices, not per account")
    prices = [price for plan in plans.values() for price in plan.stripe_prices]
    if len(prices) != len(set(prices)):
        raise CatalogError(f"{source}: a Stripe price is listed under two plans (or twice)")
    return Catalog(version, models, packs, plans, _usage_label_keys(source, data.get("usage", {})), default_plan)


MAX_USAGE_LABEL_KEYS = 8


def _usage_label_keys(source: str, usage: Any) -> tuple[str, ...]:
    keys = usage.get("label_keys", []) if isinstance(usage, dict) else None
    if not isinstance(keys, list) or not all(isinstance(key, str) and key for key in keys):
        raise CatalogError(f"{source}: `usage.label_keys` must be a list of label keys")
    if len(set(keys)) != len(keys) or len(keys) > MAX_USAGE_LABEL_KEYS:
        raise CatalogError(f"{source}: `usage.label_keys` lists at most {MAX_USAGE_LABEL_KEYS} keys, each once")
    return tuple(keys)


def _entries(data: Mapping[str, Any], key: str, source: str) -> list[Mapping[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CatalogError(f"{source}: `{key}` must be an array of tables")
    return entries


def _unique(source: str, key: str, items: list[T]) -> dict[str, T]:
    by_id: dict[str, T] = {}
    for item in items:
        if item.id in by_id:
            raise CatalogError(f"{source}: {key} has {item.id!r} twice")
        by_id[item.id] = item
    return by_id


def _text(source: str, entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{source}: {entry.get('id', '?')!r}: `{key}` must be a non-empty string")
    return value


def _count(source: str, entry: Mapping[str, Any], key: str, *, minimum: int, default: int | None = None) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= INT64_MAX:
        raise CatalogError(f"{source}: {entry.get('id', '?')!r}: `{key}` must be a whole number >= {minimum}")
    return value


def _decimal(source: str, entry: Mapping[str, Any], key: str, default: str | None = None) -> int:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise CatalogError(f'{source}: {entry.get("id", "?")!r}: `{key}` must be a decimal string like "1.50"')
    try:
        return millionths(value, key)
    except ValueError as exc:
        raise CatalogError(f"{source}: {entry.get('id', '?')!r}: {exc}") from exc


def _model(source: str, entry: Mapping[str, Any]) -> Model:
    input_price = _decimal(source, entry, "input_usd_per_million")
    output_price = _decimal(source, entry, "output_usd_per_million")
    input_weight = _decimal(source, entry, "input_weight", "1")
    output_weight = _decimal(source, entry, "output_weight", "1")
    model = Model(
        id=_text(source, entry, "id"),
        provider=_text(source, entry, "provider"),
        input_price=input_price,
        output_price=output_price,
        input_weight=input_weight,
        output_weight=output_weight,
        cached_input_price=_decimal_or(source, entry, "cached_input_usd_per_million", input_price),
        cache_write_price=_decimal_or(source, entry, "cache_write_usd_per_million", input_price),
        reasoning_price=_decimal_or(source, entry, "reasoning_usd_per_million", output_price),
        cached_input_weight=_decimal_or(source, entry, "cached_input_weight", input_weight),
        cache_write_weight=_decimal_or(source, entry, "cache_write_weight", input_weight),
        reasoning_weight=_decimal_or(source, entry, "reasoning_weight", output_weight),
    )
    if model.input_weight == 0 and model.output_weight == 0:
        raise CatalogError(f"{source}: {model.id!r}: a model cannot be free of both weights")
    return model


def _decimal_or(source: str, entry: Mapping[str, Any], key: str, otherwise: int) -> int:
    """An optional decimal (a token class's price or weight); absent: the class it defaults to."""
    return _decimal(source, entry, key) if key in entry else otherwise


def _pack(source: str, entry: Mapping[str, Any]) -> Pack:
    currency = _text(source, entry, "currency")
    if len(currency) != 3 or not currency.isalpha():
        raise CatalogError(f"{source}: {entry.get('id')!r}: `currency` must be an ISO 4217 code")
    active = entry.get("active", True)
    if not isinstance(active, bool):
        raise CatalogError(f"{source}: {entry.get('id')!r}: `active` must be true or false")
    tokens = _count(source, entry, "tokens", minimum=1)
    return Pack(
        id=_text(source, entry, "id"),
        tokens=tokens,
        price_minor=_count(source, entry, "price_minor", minimum=0),
        currency=currency.lower(),
        active=active,
        name=_text(source, entry, "name") if "name" in entry else f"{tokens:,} tokens",
    )


def _plan(source: str, entry: Mapping[str, Any]) -> Plan:
    per_account = entry.get("per_account", False)
    if not isinstance(per_account, bool):
        raise CatalogError(f"{source}: {entry.get('id')!r}: `per_account` must be true or false")
    if per_account and "monthly_allowance_tokens" in entry:
        raise CatalogError(f"{source}: {entry.get('id')!r}: a per-account plan has no catalog allowance")
    allowance = 0 if per_account else _count(source, entry, "monthly_allowance_tokens", minimum=0)
    limits = RateLimits(
        **{
            key: _count(source, entry, key, minimum=1) if key in entry else None
            for key in ("requests_per_minute", "tokens_per_minute", "concurrent_holds")
        }
    )
    prices = entry.get("stripe_prices", [])
    if not isinstance(prices, list) or not all(isinstance(p, str) and p.strip() == p and p for p in prices):
        raise CatalogError(f"{source}: {entry.get('id')!r}: `stripe_prices` must be a list of Stripe price ids")
    expired_holds = entry.get("expired_holds", ExpiredHolds.RELEASE.value)
    if expired_holds not in {policy.value for policy in ExpiredHolds}:
        raise CatalogError(f'{source}: {entry.get("id")!r}: `expired_holds` must be "release" or "charge"')
    cancelled = entry.get("cancelled_allowance", CancelledAllowance.ENDS_NOW.value)
    if cancelled not in {choice.value for choice in CancelledAllowance}:
        choices = " or ".join(f'"{choice.value}"' for choice in CancelledAllowance)
        raise CatalogError(f"{source}: {entry.get('id')!r}: `cancelled_allowance` must be {choices}")
    return Plan(
        id=_text(source, entry, "id"),
        monthly_allowance_tokens=allowance,
        per_account=per_account,
        limits=limits,
        stripe_prices=tuple(prices),
        expired_holds=ExpiredHolds(expired_holds),
        cancelled_allowance=CancelledAllowance(cancelled),
    )
