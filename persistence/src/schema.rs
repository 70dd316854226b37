//! The one schema both backends share: portable SQL types only (DESIGN.md section 1).

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        email -> Nullable<Text>,
        display_name -> Text,
        password_hash -> Nullable<Text>,
        roles -> Text,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
        valid_after -> Nullable<Timestamp>,
        must_change_password -> Bool,
    }
}

diesel::table! {
    assignment_groups (id) {
        id -> Text,
        name -> Text,
        description -> Text,
        email -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    group_members (group_id, user_id) {
        group_id -> Text,
        user_id -> Text,
        added_at -> Timestamp,
    }
}

diesel::table! {
    external_refs (entity_type, entity_id, system) {
        entity_type -> Text,
        entity_id -> Text,
        system -> Text,
        external_id -> Text,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        name -> Text,
        role -> Text,
        token_hash -> Text,
        created_by -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        scopes -> Nullable<Text>,
        last_used_at -> Nullable<Timestamp>,
        created_by_kind -> Nullable<Text>,
        created_by_name -> Nullable<Text>,
    }
}

diesel::table! {
    audit_entries (id) {
        id -> Text,
        at -> Timestamp,
        actor_id -> Nullable<Text>,
        actor_name -> Text,
        entity_type -> Text,
        entity_id -> Text,
        action -> Text,
        changes -> Text,
        request_id -> Nullable<Text>,
        actor_kind -> Text,
    }
}

diesel::table! {
    outbox_events (sequence) {
        sequence -> BigInt,
        event_type -> Text,
        occurred_at -> Timestamp,
        entity_type -> Text,
        entity_id -> Text,
        data -> Text,
    }
}

diesel::table! {
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        secret -> Nullable<Text>,
        created_at -> Timestamp,
        retires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    idempotency_keys (principal, idem_key) {
        principal -> Text,
        idem_key -> Text,
        request_hash -> Text,
        status -> Nullable<Integer>,
        response_body -> Nullable<Text>,
        response_headers -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::joinable!(group_members -> assignment_groups (group_id));
diesel::joinable!(group_members -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    assignment_groups,
    group_members,
    external_refs,
    api_tokens,
    audit_entries,
    outbox_events,
    counters,
    settings,
    signing_keys,
    idempotency_keys,
    incidents,
    problems,
    ticket_configuration_items,
    ticket_words,
    notes,
    assignment_rules,
);

diesel::table! {
    incidents (id) {
        id -> Text,
        number -> Text,
        title -> Text,
        description -> Text,
        caller_id -> Text,
        channel -> Text,
        category -> Nullable<Text>,
        subcategory -> Nullable<Text>,
        impact -> Text,
        urgency -> Text,
        priority -> Text,
        state -> Text,
        on_hold_reason -> Nullable<Text>,
        assignment_group_id -> Nullable<Text>,
        assignee_id -> Nullable<Text>,
        major -> Bool,
        parent_id -> Nullable<Text>,
        resolution_code -> Nullable<Text>,
        resolution_notes -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        first_response_at -> Nullable<Timestamp>,
        resolved_at -> Nullable<Timestamp>,
        closed_at -> Nullable<Timestamp>,
        reopen_count -> Integer,
        version -> BigInt,
        has_external_refs -> Bool,
        problem_id -> Nullable<Text>,
        service_id -> Nullable<Text>,
        has_configuration_items -> Bool,
    }
}

diesel::table! {
    problems (id) {
        id -> Text,
        number -> Text,
        title -> Text,
        description -> Text,
        impact -> Text,
        urgency -> Text,
        priority -> Text,
        state -> Text,
        assignment_group_id -> Nullable<Text>,
        assignee_id -> Nullable<Text>,
        category -> Nullable<Text>,
        root_cause -> Nullable<Text>,
        workaround -> Nullable<Text>,
        known_error -> Bool,
        known_error_at -> Nullable<Timestamp>,
        resolution_code -> Nullable<Text>,
        resolution_notes -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        resolved_at -> Nullable<Timestamp>,
        closed_at -> Nullable<Timestamp>,
        version -> BigInt,
        has_external_refs -> Bool,
        service_id -> Nullable<Text>,
        has_configuration_items -> Bool,
        fix_change_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// The configuration items each ticket concerns.
    ticket_configuration_items (ticket_type, ticket_id, ci_id) {
        ticket_type -> Text,
        ticket_id -> Text,
        ci_id -> Text,
    }
}

diesel::table! {
    notes (id) {
        id -> Text,
        entity_type -> Text,
        entity_id -> Text,
        author_id -> Nullable<Text>,
        author_name -> Text,
        visibility -> Text,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// SQLite only: an FTS5 index of every ticket's words for `q`, keyed by its kind and the
    /// sequence of its number (`tickets::word_rowids`; PostgreSQL has a GIN index per table).
    ticket_words (rowid) {
        rowid -> BigInt,
        terms -> Text,
    }
}

diesel::table! {
    assignment_rules (id) {
        id -> Text,
        position -> Integer,
        category -> Text,
        subcategory -> Nullable<Text>,
        group_id -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    ci_classes (name) {
        name -> Text,
        parent -> Nullable<Text>,
        description -> Text,
        builtin -> Bool,
        attributes -> Text,
        identification_rules -> Text,
        source_precedence -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    configuration_items (id) {
        id -> Text,
        name -> Text,
        class -> Text,
        status -> Text,
        environment -> Nullable<Text>,
        criticality -> Nullable<Text>,
        owner_group_id -> Nullable<Text>,
        attributes -> Text,
        attribute_sources -> Text,
        has_external_refs -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    ci_identifiers (ci_id, name) {
        ci_id -> Text,
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    ci_relationships (id) {
        id -> Text,
        source_id -> Text,
        rel_type -> Text,
        target_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    ci_classes,
    configuration_items,
    ci_identifiers,
    ci_relationships,
);

diesel::table! {
    calendars (id) {
        id -> Text,
        name -> Text,
        definition -> Text,
        builtin -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    calendar_versions (calendar_id, version) {
        calendar_id -> Text,
        version -> BigInt,
        definition -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sla_policies (id) {
        id -> Text,
        name -> Text,
        precedence -> Integer,
        ticket_type -> Text,
        calendar_id -> Text,
        definition -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(calendars, calendar_versions, sla_policies);

diesel::table! {
    revoked_tokens (jti) {
        jti -> Text,
        user_id -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    changes (id) {
        id -> Text,
        number -> Text,
        change_type -> Text,
        title -> Text,
        description -> Text,
        plans -> Text,
        state -> Text,
        risk -> Text,
        risk_detail -> Text,
        planned_start -> Nullable<Timestamp>,
        planned_end -> Nullable<Timestamp>,
        actual_start -> Nullable<Timestamp>,
        actual_end -> Nullable<Timestamp>,
        service_id -> Nullable<Text>,
        assignment_group_id -> Nullable<Text>,
        assignee_id -> Nullable<Text>,
        requested_by -> Text,
        template_id -> Nullable<Text>,
        approval_round -> BigInt,
        authorized_at -> Nullable<Timestamp>,
        retrospective -> Bool,
        approval -> Text,
        outcome -> Nullable<Text>,
        review_notes -> Nullable<Text>,
        related -> Text,
        cancel_reason -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        closed_at -> Nullable<Timestamp>,
        version -> BigInt,
        has_external_refs -> Bool,
        has_configuration_items -> Bool,
    }
}

diesel::table! {
    change_approvals (id) {
        id -> Text,
        change_id -> Text,
        round -> BigInt,
        approver_id -> Text,
        asked_as -> Text,
        state -> Text,
        comment -> Nullable<Text>,
        decided_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    change_approval_policies (id) {
        id -> Text,
        name -> Text,
        precedence -> Integer,
        definition -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    standard_change_templates (id) {
        id -> Text,
        name -> Text,
        description -> Text,
        definition -> Text,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    change_freeze_windows (id) {
        id -> Text,
        name -> Text,
        reason -> Text,
        start_at -> Timestamp,
        end_at -> Timestamp,
        scope -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    changes,
    change_approvals,
    ticket_configuration_items
);

diesel::table! {
    sla_timers (id) {
        id -> Text,
        ticket_type -> Text,
        ticket_id -> Text,
        metric -> Text,
        policy_id -> Text,
        calendar_id -> Text,
        calendar_version -> BigInt,
        warning_percent -> Integer,
        target_seconds -> BigInt,
        state -> Text,
        started_at -> Timestamp,
        as_of -> Timestamp,
        elapsed_seconds -> BigInt,
        paused_seconds -> BigInt,
        due_at -> Nullable<Timestamp>,
        warned_at -> Nullable<Timestamp>,
        breached_at -> Nullable<Timestamp>,
        stopped_at -> Nullable<Timestamp>,
        next_alarm_at -> Nullable<Timestamp>,
        due_order -> Timestamp,
        version -> BigInt,
        clock_running -> Bool,
        timeline -> Text,
    }
}

diesel::table! {
    alerts (id) {
        id -> Text,
        source -> Text,
        dedup_key -> Text,
        status -> Text,
        severity -> Text,
        summary -> Text,
        description -> Text,
        resources -> Text,
        labels -> Text,
        annotations -> Text,
        count -> BigInt,
        first_seen -> Timestamp,
        last_seen -> Timestamp,
        starts_at -> Nullable<Timestamp>,
        ends_at -> Nullable<Timestamp>,
        resolved_at -> Nullable<Timestamp>,
        incident_id -> Nullable<Text>,
        rule_id -> Nullable<Text>,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(incidents, sla_timers);
diesel::allow_tables_to_appear_in_same_query!(problems, sla_timers);

diesel::table! {
    alert_rules (id) {
        id -> Text,
        name -> Text,
        position -> Integer,
        source -> Nullable<Text>,
        severity -> Nullable<Text>,
        labels -> Text,
        impact -> Text,
        urgency -> Text,
        category -> Nullable<Text>,
        group_id -> Nullable<Text>,
        open_incident -> Bool,
        resolve_incident -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    webhook_subscriptions (id) {
        id -> Text,
        url -> Text,
        description -> Text,
        event_types -> Text,
        active -> Bool,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_secret_until -> Nullable<Timestamp>,
        position -> BigInt,
        consecutive_failures -> Integer,
        disabled_reason -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        subscription_id -> Text,
        event_sequence -> Nullable<BigInt>,
        event_type -> Text,
        entity_key -> Text,
        body -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        response_status -> Nullable<Integer>,
        latency_ms -> Nullable<BigInt>,
        response_excerpt -> Nullable<Text>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(webhook_deliveries -> webhook_subscriptions (subscription_id));
diesel::allow_tables_to_appear_in_same_query!(webhook_subscriptions, webhook_deliveries);
