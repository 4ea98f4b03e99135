//! The tables, one definition for both backends: the SQL types used (Text, BigInt,
//! Integer, Bool) mean the same on PostgreSQL and SQLite, so every query in this crate
//! compiles for both.

diesel::table! {
    accounts (id) {
        id -> Text,
        plan -> Text,
        debt -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        account_id -> Text,
        email -> Text,
        name -> Nullable<Text>,
        role -> Text,
        email_verified -> Bool,
        password_hash -> Nullable<Text>,
        external_subject -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    grants (id) {
        id -> Text,
        account_id -> Text,
        source -> Text,
        amount -> BigInt,
        remaining -> BigInt,
        priority -> Integer,
        expires_at -> Nullable<BigInt>,
        rollover_cap -> BigInt,
        reference -> Nullable<Text>,
        created_at -> BigInt,
        rollover_until -> Nullable<BigInt>,
    }
}

diesel::table! {
    holds (id) {
        id -> Text,
        account_id -> Text,
        amount -> BigInt,
        captured -> BigInt,
        status -> Text,
        allocations -> Text,
        reference -> Nullable<Text>,
        expires_at -> BigInt,
        created_at -> BigInt,
        resolved_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    ledger_transactions (id) {
        id -> Text,
        account_id -> Text,
        kind -> Text,
        amount -> BigInt,
        delta -> BigInt,
        hold_id -> Nullable<Text>,
        grant_id -> Nullable<Text>,
        refund_of -> Nullable<Text>,
        refunded -> BigInt,
        refund_expires_at -> Nullable<BigInt>,
        reference -> Nullable<Text>,
        memo -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    ledger_legs (txn_id, position) {
        txn_id -> Text,
        position -> Integer,
        account_id -> Text,
        grant_id -> Nullable<Text>,
        delta -> BigInt,
    }
}

diesel::table! {
    ledger_idempotency (account_id, key) {
        account_id -> Text,
        key -> Text,
        fingerprint -> Text,
        outcome -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    quota_usage (account_id, meter, window_start) {
        account_id -> Text,
        meter -> Text,
        window_start -> BigInt,
        window_end -> BigInt,
        used -> BigInt,
    }
}

diesel::table! {
    quota_events (account_id, key) {
        account_id -> Text,
        key -> Text,
        meter -> Text,
        amount -> BigInt,
        window_start -> BigInt,
        used_after -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Text,
        account_id -> Text,
        plan -> Text,
        billing_interval -> Text,
        status -> Text,
        period_start -> Nullable<BigInt>,
        period_end -> Nullable<BigInt>,
        trial_end -> Nullable<BigInt>,
        cancel_at_period_end -> Bool,
        pending_plan -> Nullable<Text>,
        external_id -> Nullable<Text>,
        created_at -> BigInt,
        canceled_at -> Nullable<BigInt>,
        version -> BigInt,
        past_due_since -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_idempotency (scope, key) {
        scope -> Text,
        key -> Text,
        fingerprint -> Text,
        status -> Nullable<Integer>,
        body -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> Text,
        external_id -> Text,
        kind -> Text,
        payload -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        received_at -> BigInt,
        next_attempt_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    tasks (id) {
        id -> Text,
        account_id -> Text,
        kind -> Text,
        status -> Text,
        input -> Text,
        output -> Nullable<Text>,
        error -> Nullable<Text>,
        hold_id -> Nullable<Text>,
        reserved -> BigInt,
        credits_charged -> Nullable<BigInt>,
        attempts -> Integer,
        max_attempts -> Integer,
        lease_until -> Nullable<BigInt>,
        deadline -> BigInt,
        created_at -> BigInt,
        finished_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    task_events (task_id, seq) {
        task_id -> Text,
        seq -> Integer,
        at -> BigInt,
        status -> Text,
        attempt -> Integer,
        actor -> Text,
        note -> Nullable<Text>,
    }
}

diesel::table! {
    task_deliveries (id) {
        id -> Text,
        task_id -> Text,
        event -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        delivered_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Text,
        actor -> Text,
        action -> Text,
        target -> Nullable<Text>,
        request_id -> Nullable<Text>,
        details -> Text,
        at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    users,
    grants,
    holds,
    ledger_transactions,
    ledger_legs,
    ledger_idempotency,
    quota_usage,
    quota_events,
    subscriptions,
    api_idempotency,
    webhook_events,
    tasks,
    task_events,
    task_deliveries,
    audit_log,
);

diesel::table! {
    refresh_tokens (id) {
        id -> Text,
        user_id -> Text,
        family -> Text,
        token_hash -> Text,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::joinable!(refresh_tokens -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(refresh_tokens, users);

diesel::table! {
    user_preferences (user_id) {
        user_id -> Text,
        data -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    saved_items (id) {
        id -> Text,
        user_id -> Text,
        kind -> Text,
        title -> Nullable<Text>,
        content -> Text,
        metadata -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        prefix -> Text,
        key_hash -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    one_time_tokens (id) {
        id -> Text,
        user_id -> Text,
        purpose -> Text,
        token_hash -> Text,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    payments (id) {
        id -> Text,
        account_id -> Text,
        kind -> Text,
        external_id -> Text,
        payment_intent -> Nullable<Text>,
        item -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        credits -> BigInt,
        withheld -> BigInt,
        expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    payment_charges (charge) {
        charge -> Text,
        payment_intent -> Nullable<Text>,
        amount_minor -> BigInt,
        refunded_minor -> BigInt,
        dispute -> Nullable<Text>,
        dispute_observed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    payment_customers (provider, customer) {
        provider -> Text,
        customer -> Text,
        account_id -> Text,
    }
}

diesel::table! {
    llm_calls (id) {
        id -> Text,
        account_id -> Text,
        api_key -> Nullable<Text>,
        model -> Text,
        provider -> Text,
        input_tokens -> BigInt,
        cached_input_tokens -> BigInt,
        output_tokens -> BigInt,
        reasoning_tokens -> BigInt,
        cost_micros -> BigInt,
        currency -> Text,
        credits -> BigInt,
        latency_ms -> BigInt,
        outcome -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    job_runs (job, period) {
        job -> Text,
        period -> BigInt,
        instance -> Text,
        started_at -> BigInt,
    }
}

diesel::table! {
    reward_claims (id) {
        id -> Text,
        account_id -> Text,
        user_id -> Text,
        reward -> Text,
        seq -> Integer,
        status -> Text,
        credits -> BigInt,
        evidence -> Text,
        created_at -> BigInt,
        decided_at -> Nullable<BigInt>,
        decided_by -> Nullable<Text>,
    }
}
