-- The schema meter's migrations make, written by scripts/generate_schema.py from a migrated
-- database; do not edit by hand. The functions are in sql/, one a file.

CREATE TYPE meter_balance_row AS (
    plan_id text,
    period_start timestamp with time zone,
    period_end timestamp with time zone,
    paid_through timestamp with time zone,
    allowance_total bigint,
    debt bigint,
    warned smallint,
    allowance_remaining bigint,
    purchased_remaining bigint,
    allowance_held bigint,
    purchased_held bigint,
    used bigint,
    granted_remaining bigint,
    granted_held bigint
);

CREATE TYPE meter_pricing AS (
    catalog_version text,
    input_weight bigint,
    output_weight bigint,
    input_price bigint,
    output_price bigint,
    cached_input_weight bigint,
    cache_write_weight bigint,
    reasoning_weight bigint,
    cached_input_price bigint,
    cache_write_price bigint,
    reasoning_price bigint,
    usage_labels jsonb
);

CREATE TYPE meter_reserve_call AS (
    account_id text,
    request_id text,
    hold_id uuid,
    model text,
    input_tokens bigint,
    max_output_tokens bigint,
    ttl_seconds integer,
    labels jsonb,
    pricing meter_pricing,
    start integer
);

CREATE TABLE accounts (
    account_id text NOT NULL,
    plan_id text NOT NULL,
    monthly_allowance bigint NOT NULL,
    period_start timestamp with time zone NOT NULL,
    period_end timestamp with time zone NOT NULL,
    allowance_total bigint NOT NULL,
    debt bigint DEFAULT 0 NOT NULL,
    bucket_count smallint NOT NULL,
    subscription_ref text,
    plan_event_time timestamp with time zone,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    granted_period_start timestamp with time zone,
    warned_levels smallint DEFAULT 0 NOT NULL,
    warned_period_start timestamp with time zone,
    requests_per_minute bigint,
    tokens_per_minute bigint,
    concurrent_holds bigint,
    debt_announced boolean DEFAULT false NOT NULL,
    expired_holds text,
    budget_count integer DEFAULT 0 NOT NULL,
    month_anchor timestamp with time zone,
    billing_period_start timestamp with time zone,
    billing_period_end timestamp with time zone,
    paid_through timestamp with time zone,
    allowance_after_paid bigint,
    allowance_withheld bigint DEFAULT 0 NOT NULL,
    expiring_told_period_start timestamp with time zone,
    next_grant_expiry timestamp with time zone,
    rollover_cap bigint,
    rollover_days integer,
    subscription_status text,
    grace_until timestamp with time zone,
    CONSTRAINT accounts_pkey PRIMARY KEY (account_id),
    CONSTRAINT accounts_allowance_after_paid_check CHECK ((allowance_after_paid >= 0)),
    CONSTRAINT accounts_allowance_total_check CHECK ((allowance_total >= 0)),
    CONSTRAINT accounts_allowance_withheld_check CHECK ((allowance_withheld >= 0)),
    CONSTRAINT accounts_billing_period_check CHECK ((billing_period_start < billing_period_end)),
    CONSTRAINT accounts_bucket_count_check CHECK (((bucket_count >= 1) AND (bucket_count <= 1024))),
    CONSTRAINT accounts_budget_count_check CHECK ((budget_count >= 0)),
    CONSTRAINT accounts_check CHECK ((period_start < period_end)),
    CONSTRAINT accounts_concurrent_holds_check CHECK ((concurrent_holds > 0)),
    CONSTRAINT accounts_debt_check CHECK ((debt >= 0)),
    CONSTRAINT accounts_expired_holds_check CHECK ((expired_holds = ANY (ARRAY['release'::text, 'charge'::text]))),
    CONSTRAINT accounts_monthly_allowance_check CHECK ((monthly_allowance >= 0)),
    CONSTRAINT accounts_requests_per_minute_check CHECK ((requests_per_minute > 0)),
    CONSTRAINT accounts_rollover_cap_check CHECK ((rollover_cap > 0)),
    CONSTRAINT accounts_rollover_check CHECK (((rollover_cap IS NULL) = (rollover_days IS NULL))),
    CONSTRAINT accounts_rollover_days_check CHECK (((rollover_days >= 1) AND (rollover_days <= 3650))),
    CONSTRAINT accounts_subscription_status_check CHECK ((length(subscription_status) <= 64)),
    CONSTRAINT accounts_tokens_per_minute_check CHECK ((tokens_per_minute > 0)),
    CONSTRAINT accounts_warned_levels_check CHECK (((warned_levels >= 0) AND (warned_levels <= 15)))
);
CREATE INDEX accounts_expiring_untold ON accounts USING btree (period_end) WHERE (expiring_told_period_start IS DISTINCT FROM period_start);
CREATE INDEX accounts_next_grant_expiry ON accounts USING btree (next_grant_expiry) WHERE (next_grant_expiry IS NOT NULL);
CREATE INDEX accounts_period_end ON accounts USING btree (period_end);
CREATE INDEX accounts_subscription_ref ON accounts USING btree (subscription_ref) WHERE (subscription_ref IS NOT NULL);

CREATE TABLE adjustments (
    account_id text NOT NULL,
    request_id text NOT NULL,
    pool text NOT NULL,
    delta bigint NOT NULL,
    reason text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT adjustments_pkey PRIMARY KEY (account_id, request_id),
    CONSTRAINT adjustments_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT adjustments_delta_check CHECK ((delta <> 0)),
    CONSTRAINT adjustments_pool_check CHECK ((pool = ANY (ARRAY['allowance'::text, 'purchased'::text])))
);

CREATE TABLE balance_event_sequences (
    account_id text NOT NULL,
    last_sequence bigint NOT NULL,
    CONSTRAINT balance_event_sequences_pkey PRIMARY KEY (account_id),
    CONSTRAINT balance_event_sequences_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT balance_event_sequences_last_sequence_check CHECK ((last_sequence > 0))
);

CREATE TABLE balance_events (
    account_id text NOT NULL,
    sequence bigint NOT NULL,
    event_id uuid DEFAULT gen_random_uuid() NOT NULL,
    type text NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    payload jsonb NOT NULL,
    transaction_id xid8 DEFAULT pg_current_xact_id() NOT NULL,
    CONSTRAINT balance_events_pkey PRIMARY KEY (account_id, sequence),
    CONSTRAINT balance_events_account_id_event_id_key UNIQUE (account_id, event_id),
    CONSTRAINT balance_events_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT balance_events_sequence_check CHECK ((sequence > 0)),
    CONSTRAINT balance_events_type_check CHECK ((type = ANY (ARRAY['purchase.credited'::text, 'purchase.refused'::text, 'purchase.refusal_resolved'::text, 'purchase.refusal_settled'::text, 'credit.reversed'::text, 'dispute.won'::text, 'allowance.granted'::text, 'allowance.expired'::text, 'plan.changed'::text, 'plan.cancelled'::text, 'subscription.payment_failed'::text, 'subscription.status_changed'::text, 'balance.warning'::text, 'balance.adjusted'::text, 'debt.created'::text, 'debt.cleared'::text, 'budget.warning'::text, 'budget.exhausted'::text, 'balance.expiring'::text, 'grant.created'::text, 'grant.expired'::text, 'grant.revoked'::text])))
);
CREATE INDEX balance_events_position ON balance_events USING btree (transaction_id, account_id, sequence);

CREATE TABLE buckets (
    account_id text NOT NULL,
    pool text NOT NULL,
    bucket smallint NOT NULL,
    available bigint NOT NULL,
    held bigint NOT NULL,
    used bigint DEFAULT 0 NOT NULL,
    rate_window timestamp with time zone,
    rate_requests bigint DEFAULT 0 NOT NULL,
    rate_tokens bigint DEFAULT 0 NOT NULL,
    open_holds integer DEFAULT 0 NOT NULL,
    source text DEFAULT 'purchase'::text NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    expires_at timestamp with time zone,
    draw_seq bigint DEFAULT 0 NOT NULL,
    CONSTRAINT buckets_pkey PRIMARY KEY (account_id, pool, bucket),
    CONSTRAINT buckets_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT buckets_available_check CHECK ((available >= 0)),
    CONSTRAINT buckets_bucket_check CHECK ((bucket >= 0)),
    CONSTRAINT buckets_held_check CHECK ((held >= 0)),
    CONSTRAINT buckets_open_holds_check CHECK ((open_holds >= 0)),
    CONSTRAINT buckets_pool_check CHECK (((pool = ANY (ARRAY['allowance'::text, 'purchased'::text])) OR (pool ~ '^grant:[0-9]+$'::text))),
    CONSTRAINT buckets_rate_requests_check CHECK ((rate_requests >= 0)),
    CONSTRAINT buckets_rate_tokens_check CHECK ((rate_tokens >= 0)),
    CONSTRAINT buckets_source_check CHECK ((source = ANY (ARRAY['allowance'::text, 'purchase'::text, 'promotion'::text, 'rollover'::text, 'adjustment'::text]))),
    CONSTRAINT buckets_used_check CHECK ((used >= 0))
);

CREATE TABLE budget_buckets (
    account_id text NOT NULL,
    budget_id bigint NOT NULL,
    bucket smallint NOT NULL,
    unit text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    available bigint NOT NULL,
    held bigint NOT NULL,
    used bigint NOT NULL,
    CONSTRAINT budget_buckets_pkey PRIMARY KEY (account_id, budget_id, bucket),
    CONSTRAINT budget_buckets_account_id_budget_id_fkey FOREIGN KEY (account_id, budget_id) REFERENCES budgets(account_id, budget_id) ON DELETE CASCADE,
    CONSTRAINT budget_buckets_held_check CHECK ((held >= 0)),
    CONSTRAINT budget_buckets_unit_check CHECK ((unit = ANY (ARRAY['tokens'::text, 'cost_micros'::text]))),
    CONSTRAINT budget_buckets_used_check CHECK ((used >= 0))
);

CREATE TABLE budgets (
    account_id text NOT NULL,
    budget_id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    label_key text NOT NULL,
    label_value text NOT NULL,
    unit text NOT NULL,
    cap bigint NOT NULL,
    bucket_count smallint NOT NULL,
    period_start timestamp with time zone NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    warned_levels smallint DEFAULT 0 NOT NULL,
    warned_period_start timestamp with time zone,
    budget_window text DEFAULT 'account_month'::text NOT NULL,
    CONSTRAINT budgets_pkey PRIMARY KEY (account_id, budget_id),
    CONSTRAINT budgets_account_id_label_key_label_value_key UNIQUE (account_id, label_key, label_value),
    CONSTRAINT budgets_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT budgets_bucket_count_check CHECK (((bucket_count >= 1) AND (bucket_count <= 1024))),
    CONSTRAINT budgets_budget_window_check CHECK ((budget_window = ANY (ARRAY['account_month'::text, 'day'::text, 'week'::text, 'calendar_month'::text]))),
    CONSTRAINT budgets_cap_check CHECK ((cap >= 0)),
    CONSTRAINT budgets_label_key_check CHECK (((length(label_key) >= 1) AND (length(label_key) <= 256))),
    CONSTRAINT budgets_label_value_check CHECK (((length(label_value) >= 1) AND (length(label_value) <= 256))),
    CONSTRAINT budgets_unit_check CHECK ((unit = ANY (ARRAY['tokens'::text, 'cost_micros'::text])))
);

CREATE TABLE caller_rate_counts (
    caller text NOT NULL,
    method text NOT NULL,
    second bigint NOT NULL,
    replica uuid NOT NULL,
    count bigint NOT NULL,
    CONSTRAINT caller_rate_counts_pkey PRIMARY KEY (caller, method, second, replica),
    CONSTRAINT caller_rate_counts_count_check CHECK ((count > 0))
);

CREATE TABLE checkout_sessions (
    account_id text NOT NULL,
    request_id text NOT NULL,
    pack_id text NOT NULL,
    tokens bigint NOT NULL,
    price_minor bigint NOT NULL,
    currency text NOT NULL,
    catalog_version text NOT NULL,
    success_url text NOT NULL,
    cancel_url text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    session_id text,
    url text,
    paid_at timestamp with time zone,
    expires_after_days integer,
    CONSTRAINT checkout_sessions_pkey PRIMARY KEY (account_id, request_id),
    CONSTRAINT checkout_sessions_expires_after_days_check CHECK (((expires_after_days >= 1) AND (expires_after_days <= 3650))),
    CONSTRAINT checkout_sessions_price_minor_check CHECK ((price_minor >= 0)),
    CONSTRAINT checkout_sessions_tokens_check CHECK ((tokens > 0))
);
CREATE INDEX checkout_sessions_by_session ON checkout_sessions USING btree (session_id);
CREATE INDEX checkout_sessions_recent ON checkout_sessions USING btree (account_id, created_at);
CREATE UNIQUE INDEX checkout_sessions_session ON checkout_sessions USING btree (account_id, session_id);

CREATE TABLE grants (
    account_id text NOT NULL,
    grant_id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    request_id text NOT NULL,
    source text NOT NULL,
    tokens bigint NOT NULL,
    priority integer NOT NULL,
    expires_at timestamp with time zone,
    reason text NOT NULL,
    caller text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone,
    ended_how text,
    ended_tokens bigint,
    expiring_told boolean DEFAULT false NOT NULL,
    CONSTRAINT grants_pkey PRIMARY KEY (account_id, grant_id),
    CONSTRAINT grants_account_id_request_id_key UNIQUE (account_id, request_id),
    CONSTRAINT grants_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT grants_ended_check CHECK (((ended_at IS NULL) = (ended_how IS NULL))),
    CONSTRAINT grants_ended_how_check CHECK ((ended_how = ANY (ARRAY['expired'::text, 'revoked'::text]))),
    CONSTRAINT grants_priority_check CHECK (((priority >= 0) AND (priority <= 1000000))),
    CONSTRAINT grants_source_check CHECK ((source = ANY (ARRAY['purchase'::text, 'promotion'::text, 'rollover'::text, 'adjustment'::text]))),
    CONSTRAINT grants_tokens_check CHECK ((tokens > 0))
);
CREATE INDEX grants_expiring_untold ON grants USING btree (expires_at) WHERE ((ended_at IS NULL) AND (NOT expiring_told));
CREATE INDEX grants_live_expiry ON grants USING btree (account_id, expires_at) WHERE (ended_at IS NULL);

CREATE TABLE holds (
    account_id text NOT NULL,
    hold_id uuid NOT NULL,
    request_id text NOT NULL,
    model text NOT NULL,
    input_tokens bigint NOT NULL,
    max_output_tokens bigint NOT NULL,
    ttl_seconds integer NOT NULL,
    labels jsonb NOT NULL,
    catalog_version text NOT NULL,
    input_weight bigint NOT NULL,
    output_weight bigint NOT NULL,
    input_price bigint NOT NULL,
    output_price bigint NOT NULL,
    period_start timestamp with time zone NOT NULL,
    status text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    settled_at timestamp with time zone,
    usage_input_tokens bigint,
    usage_output_tokens bigint,
    charged_tokens bigint,
    cost_micros bigint,
    unbilled_tokens bigint,
    late boolean,
    charged_at_expiry boolean DEFAULT false NOT NULL,
    cached_input_weight bigint NOT NULL,
    cache_write_weight bigint NOT NULL,
    reasoning_weight bigint NOT NULL,
    cached_input_price bigint NOT NULL,
    cache_write_price bigint NOT NULL,
    reasoning_price bigint NOT NULL,
    usage_cached_input_tokens bigint DEFAULT 0 NOT NULL,
    usage_cache_write_tokens bigint DEFAULT 0 NOT NULL,
    usage_reasoning_tokens bigint DEFAULT 0 NOT NULL,
    usage_labels jsonb DEFAULT '{}'::jsonb NOT NULL,
    budget_ids bigint[],
    budget_buckets smallint[],
    budget_held bigint[],
    budget_periods timestamp with time zone[],
    held bigint NOT NULL,
    part_pools text[] NOT NULL,
    part_held bigint[] NOT NULL,
    part_bucket smallint NOT NULL,
    CONSTRAINT holds_pkey PRIMARY KEY (account_id, hold_id),
    CONSTRAINT holds_account_id_request_id_key UNIQUE (account_id, request_id),
    CONSTRAINT holds_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT holds_cache_write_price_check CHECK ((cache_write_price >= 0)),
    CONSTRAINT holds_cache_write_weight_check CHECK ((cache_write_weight >= 0)),
    CONSTRAINT holds_cached_input_price_check CHECK ((cached_input_price >= 0)),
    CONSTRAINT holds_cached_input_weight_check CHECK ((cached_input_weight >= 0)),
    CONSTRAINT holds_check CHECK (((status = 'committed'::text) = (charged_tokens IS NOT NULL))),
    CONSTRAINT holds_held_check CHECK ((held >= 0)),
    CONSTRAINT holds_input_tokens_check CHECK ((input_tokens >= 0)),
    CONSTRAINT holds_max_output_tokens_check CHECK ((max_output_tokens >= 0)),
    CONSTRAINT holds_parts_check CHECK ((cardinality(part_pools) = cardinality(part_held))),
    CONSTRAINT holds_reasoning_price_check CHECK ((reasoning_price >= 0)),
    CONSTRAINT holds_reasoning_weight_check CHECK ((reasoning_weight >= 0)),
    CONSTRAINT holds_status_check CHECK ((status = ANY (ARRAY['open'::text, 'committed'::text, 'released'::text, 'expired'::text]))),
    CONSTRAINT holds_ttl_seconds_check CHECK ((ttl_seconds > 0))
);
CREATE INDEX holds_open_expires_at ON holds USING btree (expires_at) WHERE (status = 'open'::text);

CREATE TABLE ledger_entries (
    account_id text NOT NULL,
    entry_id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    created_at timestamp with time zone NOT NULL,
    kind text NOT NULL,
    pool text NOT NULL,
    amount bigint NOT NULL,
    reservation_id text,
    ref text,
    note text,
    caller text NOT NULL,
    CONSTRAINT ledger_entries_pkey PRIMARY KEY (account_id, entry_id),
    CONSTRAINT ledger_entries_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT ledger_entries_amount_check CHECK ((amount <> 0)),
    CONSTRAINT ledger_entries_kind_check CHECK ((kind = ANY (ARRAY['subscription_grant'::text, 'expiry'::text, 'usage'::text, 'purchase'::text, 'adjustment'::text, 'debt_payment'::text, 'refund'::text, 'dispute_freeze'::text, 'dispute_release'::text, 'grant'::text, 'revocation'::text]))),
    CONSTRAINT ledger_entries_pool_check CHECK (((pool = ANY (ARRAY['allowance'::text, 'purchased'::text])) OR (pool ~ '^grant:[0-9]+$'::text) OR (pool = 'debt'::text)))
);
CREATE INDEX ledger_entries_month_grants ON ledger_entries USING btree (account_id, ref) WHERE (kind = 'subscription_grant'::text);
CREATE TRIGGER ledger_entries_append_only BEFORE DELETE OR UPDATE ON ledger_entries FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE TABLE meter_secrets (
    name text NOT NULL,
    value bytea NOT NULL,
    CONSTRAINT meter_secrets_pkey PRIMARY KEY (name),
    CONSTRAINT meter_secrets_value_check CHECK ((length(value) >= 32))
);

CREATE TABLE pack_payments (
    payment_ref text NOT NULL,
    account_id text NOT NULL,
    outcome text NOT NULL,
    decided_at timestamp with time zone NOT NULL,
    CONSTRAINT pack_payments_pkey PRIMARY KEY (payment_ref),
    CONSTRAINT pack_payments_outcome_check CHECK ((outcome = ANY (ARRAY['credited'::text, 'refused'::text])))
);

CREATE TABLE purchases (
    account_id text NOT NULL,
    payment_ref text NOT NULL,
    pack_id text NOT NULL,
    tokens bigint NOT NULL,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    payment_intent text,
    event_id text,
    created_at timestamp with time zone NOT NULL,
    refunded_minor bigint DEFAULT 0 NOT NULL,
    refund_reversed_tokens bigint DEFAULT 0 NOT NULL,
    frozen_tokens bigint DEFAULT 0 NOT NULL,
    dispute_status text,
    grant_id bigint,
    cover_claimed bigint DEFAULT 0 NOT NULL,
    frozen_debt bigint DEFAULT 0 NOT NULL,
    frozen_cover bigint DEFAULT 0 NOT NULL,
    CONSTRAINT purchases_pkey PRIMARY KEY (account_id, payment_ref),
    CONSTRAINT purchases_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT purchases_amount_minor_check CHECK ((amount_minor >= 0)),
    CONSTRAINT purchases_check CHECK (((refund_reversed_tokens + frozen_tokens) <= tokens)),
    CONSTRAINT purchases_cover_claimed_check CHECK ((cover_claimed >= 0)),
    CONSTRAINT purchases_dispute_status_check CHECK ((dispute_status = ANY (ARRAY['open'::text, 'won'::text, 'lost'::text]))),
    CONSTRAINT purchases_frozen_cover_check CHECK ((frozen_cover >= 0)),
    CONSTRAINT purchases_frozen_debt_check CHECK ((frozen_debt >= 0)),
    CONSTRAINT purchases_frozen_tokens_check CHECK ((frozen_tokens >= 0)),
    CONSTRAINT purchases_refund_reversed_tokens_check CHECK ((refund_reversed_tokens >= 0)),
    CONSTRAINT purchases_refunded_minor_check CHECK ((refunded_minor >= 0)),
    CONSTRAINT purchases_tokens_check CHECK ((tokens > 0))
);
CREATE INDEX purchases_payment_intent ON purchases USING btree (payment_intent) WHERE (payment_intent IS NOT NULL);

CREATE TABLE refused_purchases (
    account_id text NOT NULL,
    payment_ref text NOT NULL,
    pack_id text NOT NULL,
    tokens bigint NOT NULL,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    payment_intent text,
    event_id text,
    reason text NOT NULL,
    message text NOT NULL,
    refused_at timestamp with time zone NOT NULL,
    number bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    state text DEFAULT 'open'::text NOT NULL,
    refunded_minor bigint DEFAULT 0 NOT NULL,
    refund_ref text,
    note text,
    settled_at timestamp with time zone,
    settled_by text,
    CONSTRAINT refused_purchases_pkey PRIMARY KEY (account_id, payment_ref),
    CONSTRAINT refused_purchases_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT refused_purchases_refunded_minor_check CHECK ((refunded_minor >= 0)),
    CONSTRAINT refused_purchases_state_check CHECK ((state = ANY (ARRAY['open'::text, 'refund_requested'::text, 'refunded'::text, 'resolved'::text])))
);
CREATE INDEX refused_purchases_number ON refused_purchases USING btree (number);
CREATE INDEX refused_purchases_payment_intent ON refused_purchases USING btree (payment_intent) WHERE (payment_intent IS NOT NULL);

CREATE TABLE subscription_payments (
    account_id text NOT NULL,
    invoice_ref text NOT NULL,
    subscription_ref text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    period_end timestamp with time zone NOT NULL,
    proration boolean NOT NULL,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    tokens bigint NOT NULL,
    payment_intent text,
    refunded_minor bigint DEFAULT 0 NOT NULL,
    refund_reversed_tokens bigint DEFAULT 0 NOT NULL,
    frozen_tokens bigint DEFAULT 0 NOT NULL,
    frozen_debt bigint DEFAULT 0 NOT NULL,
    dispute_status text,
    unused_at_end bigint,
    cover_claimed bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone NOT NULL,
    months integer DEFAULT 1 NOT NULL,
    withheld_tokens bigint DEFAULT 0 NOT NULL,
    frozen_withheld bigint DEFAULT 0 NOT NULL,
    frozen_cover bigint DEFAULT 0 NOT NULL,
    month_anchor timestamp with time zone,
    frozen_granted bigint DEFAULT 0 NOT NULL,
    CONSTRAINT subscription_payments_pkey PRIMARY KEY (account_id, invoice_ref),
    CONSTRAINT subscription_payments_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts(account_id),
    CONSTRAINT subscription_payments_amount_minor_check CHECK ((amount_minor >= 0)),
    CONSTRAINT subscription_payments_check CHECK (((frozen_debt >= 0) AND (frozen_debt <= frozen_tokens))),
    CONSTRAINT subscription_payments_check1 CHECK (((refund_reversed_tokens + frozen_tokens) <= tokens)),
    CONSTRAINT subscription_payments_dispute_status_check CHECK ((dispute_status = ANY (ARRAY['open'::text, 'won'::text, 'lost'::text]))),
    CONSTRAINT subscription_payments_frozen_cover_check CHECK ((frozen_cover >= 0)),
    CONSTRAINT subscription_payments_frozen_granted_check CHECK ((frozen_granted >= 0)),
    CONSTRAINT subscription_payments_frozen_tokens_check CHECK ((frozen_tokens >= 0)),
    CONSTRAINT subscription_payments_frozen_withheld_check CHECK ((frozen_withheld >= 0)),
    CONSTRAINT subscription_payments_months_check CHECK ((months >= 0)),
    CONSTRAINT subscription_payments_refund_reversed_tokens_check CHECK ((refund_reversed_tokens >= 0)),
    CONSTRAINT subscription_payments_refunded_minor_check CHECK ((refunded_minor >= 0)),
    CONSTRAINT subscription_payments_tokens_check CHECK ((tokens >= 0)),
    CONSTRAINT subscription_payments_unused_at_end_check CHECK ((unused_at_end >= 0)),
    CONSTRAINT subscription_payments_withheld_check CHECK ((frozen_withheld <= withheld_tokens)),
    CONSTRAINT subscription_payments_withheld_tokens_check CHECK ((withheld_tokens >= 0))
);
CREATE INDEX subscription_payments_intent ON subscription_payments USING btree (payment_intent) WHERE (payment_intent IS NOT NULL);
CREATE INDEX subscription_payments_invoice ON subscription_payments USING btree (invoice_ref);

CREATE TABLE usage_daily (
    account_id text NOT NULL,
    day date NOT NULL,
    model text NOT NULL,
    pool text NOT NULL,
    bucket smallint NOT NULL,
    requests bigint NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    charged_tokens bigint NOT NULL,
    cost_micros bigint NOT NULL,
    unbilled_tokens bigint NOT NULL,
    cached_input_tokens bigint DEFAULT 0 NOT NULL,
    cache_write_tokens bigint DEFAULT 0 NOT NULL,
    reasoning_tokens bigint DEFAULT 0 NOT NULL,
    labels jsonb DEFAULT '{}'::jsonb NOT NULL,
    CONSTRAINT usage_daily_pkey PRIMARY KEY (account_id, day, model, labels, pool, bucket),
    CONSTRAINT usage_daily_cache_write_tokens_check CHECK ((cache_write_tokens >= 0)),
    CONSTRAINT usage_daily_cached_input_tokens_check CHECK ((cached_input_tokens >= 0)),
    CONSTRAINT usage_daily_charged_tokens_check CHECK ((charged_tokens >= 0)),
    CONSTRAINT usage_daily_cost_micros_check CHECK ((cost_micros >= 0)),
    CONSTRAINT usage_daily_input_tokens_check CHECK ((input_tokens >= 0)),
    CONSTRAINT usage_daily_output_tokens_check CHECK ((output_tokens >= 0)),
    CONSTRAINT usage_daily_pool_check CHECK (((pool = ANY (ARRAY['allowance'::text, 'purchased'::text])) OR (pool ~ '^grant:[0-9]+$'::text))),
    CONSTRAINT usage_daily_reasoning_tokens_check CHECK ((reasoning_tokens >= 0)),
    CONSTRAINT usage_daily_requests_check CHECK ((requests > 0)),
    CONSTRAINT usage_daily_unbilled_tokens_check CHECK ((unbilled_tokens >= 0))
);
CREATE INDEX usage_daily_day ON usage_daily USING btree (day, account_id);

CREATE TABLE usage_folding (
    folded_through date
);

CREATE TABLE waiting_requests (
    waits_for text NOT NULL,
    event_id text NOT NULL,
    kind text NOT NULL,
    request jsonb NOT NULL,
    received_at timestamp with time zone NOT NULL,
    CONSTRAINT waiting_requests_pkey PRIMARY KEY (waits_for, event_id),
    CONSTRAINT waiting_requests_kind_check CHECK ((kind = ANY (ARRAY['reversal'::text, 'invoice'::text, 'payment_link'::text, 'payment_failure'::text])))
);

CREATE TABLE webhook_deliveries (
    account_id text NOT NULL,
    endpoint_id text NOT NULL,
    sequence bigint NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone NOT NULL,
    last_error text,
    delivered_at timestamp with time zone,
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (account_id, endpoint_id, sequence),
    CONSTRAINT webhook_deliveries_account_id_sequence_fkey FOREIGN KEY (account_id, sequence) REFERENCES balance_events(account_id, sequence),
    CONSTRAINT webhook_deliveries_endpoint_id_fkey FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints(endpoint_id),
    CONSTRAINT webhook_deliveries_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'delivered'::text, 'dead'::text])))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries USING btree (endpoint_id, next_attempt_at) WHERE (status = 'pending'::text);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries USING btree (next_attempt_at) WHERE (status = 'pending'::text);

CREATE TABLE webhook_endpoints (
    endpoint_id text NOT NULL,
    url text NOT NULL,
    secret text NOT NULL,
    event_types text[] DEFAULT '{}'::text[] NOT NULL,
    paused boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone NOT NULL,
    disabled_at timestamp with time zone,
    disabled_reason text,
    timeouts integer DEFAULT 0 NOT NULL,
    backoff_until timestamp with time zone,
    CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (endpoint_id),
    CONSTRAINT webhook_endpoints_timeouts_check CHECK ((timeouts >= 0))
);

CREATE TABLE webhook_events (
    account_id text NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    status text NOT NULL,
    reason text,
    payload bytea NOT NULL,
    received_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    payload_pruned_at timestamp with time zone,
    pruned_payload_bytes integer,
    CONSTRAINT webhook_events_pkey PRIMARY KEY (account_id, event_id),
    CONSTRAINT webhook_events_pruned_check CHECK (((payload_pruned_at IS NULL) OR ((octet_length(payload) = 0) AND (pruned_payload_bytes IS NOT NULL) AND (pruned_payload_bytes >= 0)))),
    CONSTRAINT webhook_events_status_check CHECK ((status = ANY (ARRAY['applied'::text, 'ignored'::text, 'rejected'::text, 'pending'::text])))
);
CREATE INDEX webhook_events_event_id ON webhook_events USING btree (event_id);
CREATE INDEX webhook_events_payload_due ON webhook_events USING btree (updated_at) WHERE (payload_pruned_at IS NULL);

-- view
CREATE VIEW usage_records (
    account_id text,
    hold_id uuid,
    request_id text,
    committed_at timestamp with time zone,
    model text,
    catalog_version text,
    input_tokens bigint,
    output_tokens bigint,
    charged_tokens bigint,
    cost_micros bigint,
    unbilled_tokens bigint,
    late boolean,
    labels jsonb,
    cached_input_tokens bigint,
    cache_write_tokens bigint,
    reasoning_tokens bigint,
    usage_labels jsonb
);
