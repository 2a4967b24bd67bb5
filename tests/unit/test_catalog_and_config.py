"""The catalog file is validated at load; settings come from METER_* variables."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from meter import catalog
from meter.config import ConfigError, Settings
from meter.domain.errors import PlanMismatch, UnknownModel, UnknownPack, UnknownPlan, UnknownPrice

VALID: dict[str, Any] = {
    "version": "t1",
    "models": [{"id": "m", "provider": "p", "input_usd_per_million": "3", "output_usd_per_million": "15"}],
    "packs": [{"id": "p1", "tokens": 10, "price_minor": 1, "currency": "usd"}],
    "plans": [{"id": "free", "monthly_allowance_tokens": 0}, {"id": "ent", "per_account": True}],
}


def broken(path: tuple[str, int, str] | str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    if isinstance(path, str):
        data[path] = value
    else:
        section, index, key = path
        data[section][index][key] = value
    return data


class TestPackagedCatalog:
    def test_it_loads_with_the_plans_of_the_spec(self) -> None:
        loaded = catalog.load()
        allowances = {p.id: p.monthly_allowance_tokens for p in loaded.plans.values()}
        assert allowances["starter"] == 50_000 and allowances["pro"] == 500_000
        assert allowances["business"] == 5_000_000 and loaded.plans["enterprise"].per_account
        pricing = loaded.pricing("gpt-4o")
        assert (pricing.input_weight, pricing.output_weight, pricing.input_price) == (1_000_000, 4_000_000, 2_500_000)


class TestValidation:
    def test_weights_default_to_one(self) -> None:
        model = catalog.parse(VALID).models["m"]
        assert (model.input_weight, model.output_weight) == (1_000_000, 1_000_000)

    def test_token_classes_left_out_are_priced_as_the_class_they_are_billed_as(self) -> None:
        entry = {**VALID["models"][0], "input_weight": "2", "output_weight": "3"}
        model = catalog.parse({**VALID, "models": [entry]}).models["m"]
        assert (model.cached_input_weight, model.cache_write_weight, model.reasoning_weight) == (
            2_000_000, 2_000_000, 3_000_000,
        )  # fmt: skip
        assert (model.cached_input_price, model.cache_write_price, model.reasoning_price) == (
            model.input_price, model.input_price, model.output_price,
        )  # fmt: skip
        priced = {**entry, "cached_input_weight": "0.1", "cache_write_usd_per_million": "3.75"}
        model = catalog.parse({**VALID, "models": [priced]}).models["m"]
        assert (model.cached_input_weight, model.cache_write_price) == (100_000, 3_750_000)

    @pytest.mark.parametrize(
        "data",
        [
            broken("version", ""),
            broken(("models", 0, "input_usd_per_million"), "1.0000001"),
            broken(("models", 0, "output_usd_per_million"), "-1"),
            broken(("models", 0, "input_usd_per_million"), 3),
            broken(("models", 0, "cached_input_weight"), "-0.1"),
            broken(("models", 0, "reasoning_usd_per_million"), 2),
            {**VALID, "models": [*VALID["models"], VALID["models"][0]]},
            {**VALID, "models": [{**VALID["models"][0], "input_weight": "0", "output_weight": "0"}]},
            broken(("packs", 0, "currency"), "dollars"),
            broken(("packs", 0, "tokens"), 0),
            broken(("packs", 0, "active"), "yes"),
            {
                **VALID,
                "plans": [
                    {"id": "free", "monthly_allowance_tokens": 0},
                    {"id": "ent", "per_account": True, "monthly_allowance_tokens": 5},
                ],
            },
            {**VALID, "plans": [{"id": "pro", "monthly_allowance_tokens": 5}]},
        ],
    )
    def test_malformed_catalogs_are_refused(self, data: dict[str, Any]) -> None:
        with pytest.raises(catalog.CatalogError):
            catalog.parse(data)

    def test_unreadable_file(self, tmp_path: Path) -> None:
        (tmp_path / "c.toml").write_text("version = ")
        with pytest.raises(catalog.CatalogError):
            catalog.load(tmp_path / "c.toml")

    def test_lookups_refuse_what_is_not_sold(self) -> None:
        data = copy.deepcopy(VALID)
        data["packs"].append({"id": "old", "tokens": 1, "price_minor": 1, "currency": "usd", "active": False})
        loaded = catalog.parse(data)
        with pytest.raises(UnknownModel):
            loaded.pricing("nope")
        with pytest.raises(UnknownPack):
            loaded.pack("old")
        with pytest.raises(UnknownPlan):
            loaded.plan("nope")


class TestSettings:
    def test_defaults_are_the_documented_ones(self) -> None:
        settings = Settings.from_env({})
        assert settings.database_url is None
        assert settings.data_dir == Path(".meter")
        assert (settings.grpc_addr, settings.http_addr) == ("127.0.0.1:50051", "127.0.0.1:8080")
        assert settings.buckets == 16
        assert settings.default_ttl_seconds == 600
        assert settings.reserve_wait_ms == 200
        assert settings.db_pool_size == 20

    def test_values_are_read_and_secrets_split(self) -> None:
        settings = Settings.from_env(
            {
                "METER_BUCKETS": "1",
                "METER_STRIPE_WEBHOOK_SECRET": "whsec_a, whsec_b",
                "METER_DATABASE_URL": "postgresql://x",
                "METER_RESERVE_WAIT_MS": "0",
            }
        )
        assert settings.buckets == 1
        assert settings.reserve_wait_ms == 0
        assert settings.stripe_webhook_secrets == ("whsec_a", "whsec_b")
        assert settings.database_url == "postgresql://x"

    @pytest.mark.parametrize(
        "env",
        [
            {"METER_BUCKETS": "0"},
            {"METER_BUCKETS": "many"},
            {"METER_SWEEP_INTERVAL_SECONDS": "-1"},
            {"METER_RESERVE_WAIT_MS": "-1"},
            {"METER_DEFAULT_TTL_SECONDS": "7200", "METER_MAX_TTL_SECONDS": "3600"},
            {"METER_DB_FAST_POOL_SIZE": "20"},  # removed with the second pool: refused, not ignored
            {"METER_WEBHOOK_BODY_TIMEOUT_SECONDS": "5"},  # now METER_BODY_TIMEOUT_SECONDS, for both HTTP listeners
            {"METER_MAX_CONNECTIONS": "0"},
            {"METER_HEAD_TIMEOUT_SECONDS": "0"},
            {"METER_DATABASE_URL": "not-a-url"},
            {"METER_DATABASE_URL": "mysql://meter@db/meter"},
            {"METER_DATABASE_URL": "postgresql://"},
        ],
    )
    def test_malformed_values_name_the_variable(self, env: dict[str, str]) -> None:
        with pytest.raises(ConfigError, match="METER_"):
            Settings.from_env(env)


def test_plans_carry_their_rate_limits() -> None:
    from meter.domain.limits import RateLimits

    packaged = catalog.load()
    assert packaged.plan("starter").limits == RateLimits(60, 200_000, 10)
    assert packaged.plan("enterprise").limits == RateLimits()  # per account, through SetPlan
    assert not packaged.plan("enterprise").limits.any


def test_the_packaged_plans_follow_the_pricing_page() -> None:
    """Starter is the free tier: 50 000 tokens a month, no Stripe price, the plan of every account
    without a subscription; then Pro 500 000, Business 5 000 000, Enterprise set per account."""
    from meter.domain.plans import CancelledAllowance

    packaged = catalog.load()
    assert packaged.default_plan == "starter"
    allowances = {plan.id: plan.monthly_allowance_tokens for plan in packaged.plans.values()}
    assert allowances == {"starter": 50_000, "pro": 500_000, "business": 5_000_000, "enterprise": 0}
    assert packaged.plan("starter").stripe_prices == () and packaged.plan("enterprise").per_account
    assert packaged.plan("pro").cancelled_allowance is CancelledAllowance.ENDS_WITH_PERIOD
    assert packaged.plan("starter").cancelled_allowance is CancelledAllowance.ENDS_NOW


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"default_plan": "gold"}, "default_plan"),
        ({"default_plan": "ent"}, "free"),  # per account
        (
            {"plans": [{"id": "free", "monthly_allowance_tokens": 0, "cancelled_allowance": "later"}]},
            "cancelled_allowance",
        ),
        ({"plans": [{"id": "starter", "monthly_allowance_tokens": 5}]}, "default_plan"),  # no default named, no "free"
        (
            {"plans": [{"id": "free", "monthly_allowance_tokens": 0, "cancelled_allowance": "converts"}]},
            "converted_allowance_days",  # converts, but for how long?
        ),
        (
            {"plans": [{"id": "free", "monthly_allowance_tokens": 0, "converted_allowance_days": 30}]},
            "converted_allowance_days",  # a lifetime for an allowance that does not convert
        ),
        (
            {"packs": [{"id": "p", "tokens": 1, "price_minor": 1, "currency": "usd", "expires_after_days": 0}]},
            "expires_after_days",
        ),
    ],
)
def test_plan_and_pack_terms_are_checked(change: dict[str, object], problem: str) -> None:
    with pytest.raises(catalog.CatalogError, match=problem):
        catalog.parse({**VALID, **change})


def test_a_catalog_without_default_plan_keeps_accounts_on_free() -> None:
    assert catalog.parse(VALID).default_plan == "free"  # catalogs written before default_plan existed


@pytest.mark.parametrize("value", [0, -1, "60", 1.5, True])
def test_a_rate_limit_must_be_a_positive_whole_number(value: object) -> None:
    data = {
        "version": "t",
        "plans": [{"id": "free", "monthly_allowance_tokens": 0, "requests_per_minute": value}],
    }
    with pytest.raises(catalog.CatalogError, match="requests_per_minute"):
        catalog.parse(data)


class TestStripePrices:
    """A subscription's plan is the one its Stripe price is sold as."""

    SOLD = {
        **VALID,
        "plans": [
            {"id": "free", "monthly_allowance_tokens": 0},
            {"id": "pro", "monthly_allowance_tokens": 5, "stripe_prices": ["price_pro_m", "price_pro_y"]},
            {"id": "team", "monthly_allowance_tokens": 9, "stripe_prices": ["price_team"]},
        ],
    }

    def test_the_plan_of_a_price(self) -> None:
        loaded = catalog.parse(self.SOLD)
        assert loaded.plan_sold_at(["price_pro_y"]).id == "pro"
        assert loaded.plan_sold_at(["price_addon", "price_team"], "team").id == "team"  # add-ons are not plans

    def test_a_price_no_plan_is_sold_at(self) -> None:
        with pytest.raises(UnknownPrice):
            catalog.parse(self.SOLD).plan_sold_at(["price_other"])

    @pytest.mark.parametrize(("prices", "named"), [(["price_pro_m"], "team"), (["price_pro_m", "price_team"], "")])
    def test_metadata_and_price_disagreeing(self, prices: list[str], named: str) -> None:
        with pytest.raises(PlanMismatch):
            catalog.parse(self.SOLD).plan_sold_at(prices, named)

    @pytest.mark.parametrize("prices", ["price_pro_m", [""], [" price"], [1], ["price_team"]])
    def test_malformed_or_shared_prices_are_refused(self, prices: object) -> None:
        data = copy.deepcopy(self.SOLD)
        data["plans"][1]["stripe_prices"] = prices
        with pytest.raises(catalog.CatalogError):
            catalog.parse(data)
