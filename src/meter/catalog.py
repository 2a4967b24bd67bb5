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
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from meter.domain.accounts import Account
from meter.domain.amounts import INT64_MAX, millionths
from meter.domain.checkout import SoldPack
from meter.domain.errors import PlanMismatch, UnknownModel, UnknownPack, UnknownPlan, UnknownPrice
from meter.domain.holds import ExpiredHolds, Pricing
from meter.domain.limits import PlanLimits, RateLimits
from meter.domain.plans import CancelledAllowance, Rollover

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
    # Days after it is credited that what is left of it expires (a grant of its own); None: never.
    expires_after_days: int | None = None


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
    # With CONVERTS: how long the grant what is left becomes lives.
    converted_allowance_days: int | None = None
    # What is left of a month's allowance rolls over (at most a cap, living some days); None: it expires.
    rollover: Rollover | None = None
    # A subscription whose renewal failed (past_due) keeps getting its months' allowance for this
    # many days from the failure; None: a month waits for its invoice (the allowance is suspended).
    past_due_grace_days: int | None = None


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

    def sold_now(self, pack_id: str) -> SoldPack:
        """The terms a pack is sold on today, under this catalog's version."""
        pack = self.pack(pack_id)
        return SoldPack(pack.id, pack.tokens, pack.price_minor, pack.currency, self.version, pack.expires_after_days)

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
    except OSError as exc:
        raise CatalogError(f"{path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    return parse(data, source=str(path))


def parse(data: Mapping[str, Any], source: str = "catalog") -> Catalog:
    try:
        file = CatalogFile.model_validate(data)
    except ValidationError as invalid:
        raise CatalogError(_complaint(source, data, invalid)) from None
    models = _unique(source, "models", [_model(source, m) for m in file.models])
    packs = _unique(source, "packs", [_pack(m) for m in file.packs])
    plans = _unique(source, "plans", [_plan(source, p) for p in file.plans])
    default_plan = file.default_plan
    if default_plan not in plans:
        raise CatalogError(
            f"{source}: `default_plan` must name a plan of the catalog (accounts without a subscription are on it;"
            f" left out, it is {DEFAULT_PLAN!r})"
        )
    if plans[default_plan].per_account or plans[default_plan].stripe_prices:
        raise CatalogError(f"{source}: the default plan {default_plan!r} is free: no Stripe prices, not per account")
    prices = [price for plan in plans.values() for price in plan.stripe_prices]
    if len(prices) != len(set(prices)):
        raise CatalogError(f"{source}: a Stripe price is listed under two plans (or twice)")
    return Catalog(file.version, models, packs, plans, tuple(file.usage.label_keys), default_plan)


MAX_USAGE_LABEL_KEYS = 8

# The file's shape, declared once: parse() reads it, and schemas/catalog.schema.json (for editors;
# scripts/generate_reference.py) is written from it. Amounts that are decimals are strings, as the
# file writes them ("1.50"), turned into exact millionths below.
Text = Annotated[str, Field(min_length=1)]
Decimal = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]{1,6})?$", examples=["3.00", "0.25"])]
Whole = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Positive = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
_STRICT = ConfigDict(extra="forbid", strict=True)


class ModelEntry(BaseModel):
    """A model calls can be metered for: USD per million tokens and balance tokens per token, by
    class (cache reads, cache writes and reasoning default to the class they are billed as)."""

    model_config = _STRICT
    id: Text
    provider: Text
    input_usd_per_million: Decimal
    output_usd_per_million: Decimal
    input_weight: Decimal = "1"
    output_weight: Decimal = "1"
    cached_input_usd_per_million: Decimal | None = None
    cache_write_usd_per_million: Decimal | None = None
    reasoning_usd_per_million: Decimal | None = None
    cached_input_weight: Decimal | None = None
    cache_write_weight: Decimal | None = None
    reasoning_weight: Decimal | None = None


class PackEntry(BaseModel):
    """A token pack: its tokens, its price in the currency's minor unit (cents), and the name
    customers see on Stripe's Checkout page."""

    model_config = _STRICT
    id: Text
    tokens: Positive
    price_minor: Whole
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217")]
    active: bool = True
    name: Text | None = None
    expires_after_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class PlanEntry(BaseModel):
    """A plan: its monthly allowance (or per_account), rate limits, Stripe prices and what its
    holds and its cancellation do."""

    model_config = _STRICT
    id: Text
    monthly_allowance_tokens: Whole | None = None
    per_account: bool = False
    requests_per_minute: Positive | None = None
    tokens_per_minute: Positive | None = None
    concurrent_holds: Positive | None = None
    stripe_prices: list[Annotated[str, Field(pattern=r"^\S+$")]] = Field(default_factory=list)
    expired_holds: Literal["release", "charge"] = "release"
    cancelled_allowance: Literal["ends_now", "ends_with_period", "converts"] = "ends_now"
    converted_allowance_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    rollover_cap_tokens: Positive | None = None
    rollover_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    past_due_grace_days: Annotated[int, Field(ge=1, le=60)] | None = None


class UsageSection(BaseModel):
    model_config = _STRICT
    label_keys: list[Text] = Field(default_factory=list, max_length=MAX_USAGE_LABEL_KEYS)


class CatalogFile(BaseModel):
    """meter's catalog (catalog.toml): models, token packs, plans."""

    model_config = ConfigDict(extra="forbid", strict=True, title="meter catalog")
    version: Annotated[str, Field(pattern=r"\S")]
    default_plan: Text = DEFAULT_PLAN
    usage: UsageSection = Field(default_factory=UsageSection)
    models: list[ModelEntry] = Field(default_factory=list)
    packs: list[PackEntry] = Field(default_factory=list)
    plans: list[PlanEntry] = Field(default_factory=list)


def _complaint(source: str, data: Mapping[str, Any], invalid: ValidationError) -> str:
    """The first mistake, named as the file names it: the section, the entry's id, the key."""
    error = invalid.errors()[0]
    location = list(error["loc"])
    where = source
    if len(location) >= 2 and isinstance(location[1], int):
        section, index = location[0], location[1]
        entries = data.get(str(section))
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        ident = entry.get("id", "?") if isinstance(entry, dict) else "?"
        where += f": {section} {ident!r}"
        location = location[2:]
    key = ".".join(str(part) for part in location)
    message = error["msg"]
    if key.endswith(("_usd_per_million", "_weight")):
        message = 'must be a decimal string like "1.50", at most six decimal places'
    return f"{where}: `{key}`: {message}" if key else f"{where}: {message}"


def _unique(source: str, key: str, items: list[T]) -> dict[str, T]:
    by_id: dict[str, T] = {}
    for item in items:
        if item.id in by_id:
            raise CatalogError(f"{source}: {key} has {item.id!r} twice")
        by_id[item.id] = item
    return by_id


def _decimal(source: str, entry: ModelEntry, key: str, value: str) -> int:
    try:
        return millionths(value, key)
    except ValueError as exc:
        raise CatalogError(f"{source}: {entry.id!r}: {exc}") from exc


def _model(source: str, entry: ModelEntry) -> Model:
    def amount(key: str, otherwise: int | None = None) -> int:
        value = getattr(entry, key)
        return otherwise if value is None and otherwise is not None else _decimal(source, entry, key, value)

    input_price, output_price = amount("input_usd_per_million"), amount("output_usd_per_million")
    input_weight, output_weight = amount("input_weight"), amount("output_weight")
    model = Model(
        id=entry.id,
        provider=entry.provider,
        input_price=input_price,
        output_price=output_price,
        input_weight=input_weight,
        output_weight=output_weight,
        cached_input_price=amount("cached_input_usd_per_million", input_price),
        cache_write_price=amount("cache_write_usd_per_million", input_price),
        reasoning_price=amount("reasoning_usd_per_million", output_price),
        cached_input_weight=amount("cached_input_weight", input_weight),
        cache_write_weight=amount("cache_write_weight", input_weight),
        reasoning_weight=amount("reasoning_weight", output_weight),
    )
    if model.input_weight == 0 and model.output_weight == 0:
        raise CatalogError(f"{source}: {model.id!r}: a model cannot be free of both weights")
    return model


def _pack(entry: PackEntry) -> Pack:
    return Pack(
        id=entry.id,
        tokens=entry.tokens,
        price_minor=entry.price_minor,
        currency=entry.currency.lower(),
        active=entry.active,
        name=entry.name or f"{entry.tokens:,} tokens",
        expires_after_days=entry.expires_after_days,
    )


def _plan(source: str, entry: PlanEntry) -> Plan:
    if entry.per_account and entry.monthly_allowance_tokens is not None:
        raise CatalogError(f"{source}: {entry.id!r}: a per-account plan has no catalog allowance")
    if not entry.per_account and entry.monthly_allowance_tokens is None:
        raise CatalogError(f"{source}: {entry.id!r}: `monthly_allowance_tokens` is required (or per_account = true)")
    limits = RateLimits(entry.requests_per_minute, entry.tokens_per_minute, entry.concurrent_holds)
    return Plan(
        id=entry.id,
        monthly_allowance_tokens=entry.monthly_allowance_tokens or 0,
        per_account=entry.per_account,
        limits=limits,
        stripe_prices=tuple(entry.stripe_prices),
        expired_holds=ExpiredHolds(entry.expired_holds),
        cancelled_allowance=CancelledAllowance(entry.cancelled_allowance),
        converted_allowance_days=_converted_days(source, entry),
        rollover=_rollover(source, entry),
        past_due_grace_days=entry.past_due_grace_days,
    )


def _rollover(source: str, entry: PlanEntry) -> Rollover | None:
    """A plan's rollover: a cap and a lifetime, both or neither."""
    if (entry.rollover_cap_tokens is None) != (entry.rollover_days is None):
        raise CatalogError(f"{source}: {entry.id!r}: `rollover_cap_tokens` and `rollover_days` go together")
    if entry.rollover_cap_tokens is None or entry.rollover_days is None:
        return None
    return Rollover(entry.rollover_cap_tokens, entry.rollover_days)


def _converted_days(source: str, entry: PlanEntry) -> int | None:
    """How long a cancelled plan's converted allowance lives: given exactly when it converts."""
    if (entry.cancelled_allowance == "converts") != (entry.converted_allowance_days is not None):
        raise CatalogError(
            f'{source}: {entry.id!r}: `converted_allowance_days` goes with cancelled_allowance = "converts" (only)'
        )
    return entry.converted_allowance_days
