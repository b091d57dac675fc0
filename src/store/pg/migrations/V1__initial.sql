-- Schema version 1 of the PostgreSQL store: one table per kind of record
-- the sled store keeps, with the indexes its key prefixes provide.
--
-- Conventions: times are Unix seconds in bigint (outbox due times in
-- milliseconds, as in the records); lifecycle states and statuses are the
-- names the code writes (State::as_str, OrderStatus::as_str); byte strings
-- that are stored protected today (profile packages, RSP session state,
-- kept Bound Profile Packages) are bytea, exactly as stored, never in clear.
-- The SQL sticks to what PostgreSQL-compatible distributed databases
-- (CockroachDB, YugabyteDB) also accept: no triggers, no functions, no
-- extensions; partial indexes and SKIP LOCKED only.

-- A profile and its order (ProfileRecord).
CREATE TABLE profiles (
    iccid             text    PRIMARY KEY,
    operator          text    NOT NULL,
    profile_type      text    NOT NULL,
    state             text    NOT NULL CHECK (state IN ('Available', 'Allocated', 'Linked',
                          'Confirmed', 'Released', 'Downloaded', 'Installed', 'Error',
                          'Unavailable')),
    eid               text,
    -- '' is the empty MatchingID (SGP.22 5.3.2); NULL: no order.
    matching_id       text,
    -- Hex SHA-256 hashes of the confirmation code, never the code.
    cc_hashes         text[]  NOT NULL DEFAULT '{}',
    smds_address      text,
    download_attempts integer NOT NULL DEFAULT 0 CHECK (download_attempts >= 0),
    cc_attempts       integer NOT NULL DEFAULT 0 CHECK (cc_attempts >= 0),
    expires_at        bigint,
    created_at        bigint  NOT NULL,
    updated_at        bigint  NOT NULL,
    -- Number of history entries: the next history sequence number.
    history_len       bigint  NOT NULL DEFAULT 0 CHECK (history_len >= 0),
    error_reason      text,
    -- Who imported the profile when the import has no history row.
    imported_by       text,
    -- The protected profile package, exactly as the sled store keeps it.
    package           bytea   NOT NULL
);

-- One order per MatchingID (the empty MatchingID is not an index entry).
CREATE UNIQUE INDEX profiles_matching_id ON profiles (matching_id)
    WHERE matching_id IS NOT NULL AND matching_id <> '';
-- Orders of an eUICC.
CREATE INDEX profiles_eid ON profiles (eid) WHERE eid IS NOT NULL;
-- The available pool per operator and type, for
-- SELECT ... FOR UPDATE SKIP LOCKED allocation.
CREATE INDEX profiles_pool ON profiles (operator, profile_type, iccid)
    WHERE state = 'Available';
-- Orders that can expire, for the sweeper.
CREATE INDEX profiles_expiry ON profiles (expires_at)
    WHERE expires_at IS NOT NULL
      AND state IN ('Allocated', 'Linked', 'Confirmed', 'Released', 'Downloaded');
-- Profile counts per operator, type and state.
CREATE INDEX profiles_operator_state ON profiles (operator, profile_type, state);

-- The profile types known per operator.
CREATE TABLE profile_types (
    profile_type text NOT NULL,
    operator     text NOT NULL,
    PRIMARY KEY (profile_type, operator)
);

-- A profile's transitions (HistoryEntry); seq counts from 0.
CREATE TABLE profile_history (
    iccid      text    NOT NULL REFERENCES profiles (iccid) ON DELETE CASCADE,
    seq        bigint  NOT NULL CHECK (seq >= 0),
    at         bigint  NOT NULL,
    event      text    NOT NULL,
    from_state text,
    to_state   text    NOT NULL,
    caller     text    NOT NULL,
    -- A repeated delivery (RetryKind::as_str): same_key or rebind.
    retry      text,
    PRIMARY KEY (iccid, seq)
);

-- Pending ES2+ handleDownloadProgressInfo calls (OutboxItem). The id is
-- the functionCallIdentifier. A node delivering an item holds it by
-- setting leased_by and leased_until; an expired lease is free again.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    operator        text     NOT NULL,
    eid             text,
    iccid           text     NOT NULL,
    profile_type    text     NOT NULL,
    -- Unix time of the event.
    event_at        bigint   NOT NULL,
    point           integer  NOT NULL,
    -- notificationPointStatus: Success, or Failed with its codes.
    status          text     NOT NULL CHECK (status IN ('Success', 'Failed')),
    failed_subject  text,
    failed_reason   text,
    failed_message  text,
    result_data     bytea,
    attempts        integer  NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Unix time in milliseconds of the next attempt.
    next_attempt_ms bigint   NOT NULL,
    last_error      text,
    -- Unix time in milliseconds until which leased_by delivers the item.
    leased_until    bigint,
    leased_by       text,
    CHECK ((status = 'Success') = (failed_subject IS NULL))
);

-- Due items per operator, in due order.
CREATE INDEX outbox_due ON outbox (operator, next_attempt_ms, id);

-- Idempotent re-sends: the response to a call, by the SHA-256 of the call.
CREATE TABLE idempotency (
    key        bytea  PRIMARY KEY CHECK (length(key) = 32),
    at         bigint NOT NULL,
    expires_at bigint NOT NULL,
    response   bytea  NOT NULL
);

CREATE INDEX idempotency_expiry ON idempotency (expires_at);

-- ES9+ RSP sessions: pending from InitiateAuthentication, authenticated
-- from AuthenticateClient. The state is the opaque bytes the sled store
-- keeps.
CREATE TABLE rsp_sessions (
    transaction_id bytea  PRIMARY KEY,
    phase          text   NOT NULL CHECK (phase IN ('pending', 'authenticated')),
    created_at     bigint NOT NULL,
    expires_at     bigint NOT NULL,
    state          bytea  NOT NULL
);

-- Oldest pending sessions first (the cap evicts them), and the counts per
-- phase.
CREATE INDEX rsp_sessions_phase ON rsp_sessions (phase, expires_at);
-- Expired sessions, for the sweeper.
CREATE INDEX rsp_sessions_expiry ON rsp_sessions (expires_at);

-- Bound Profile Packages kept for a retry in a later session (KeptPackage).
CREATE TABLE kept_packages (
    iccid      text   PRIMARY KEY REFERENCES profiles (iccid) ON DELETE CASCADE,
    eid        text   NOT NULL,
    dp_ci      bytea  NOT NULL,
    euicc_otpk bytea  NOT NULL,
    metadata   bytea  NOT NULL,
    bpp        bytea  NOT NULL,
    expires_at bigint NOT NULL
);

CREATE INDEX kept_packages_expiry ON kept_packages (expires_at);

-- SIM balances (BalanceRecord): the buckets, read and written whole, as
-- JSON (the serde form of Vec<Bucket>).
CREATE TABLE balances (
    iccid         text    PRIMARY KEY,
    operator      text    NOT NULL,
    not_supported boolean NOT NULL DEFAULT false,
    buckets       jsonb   NOT NULL DEFAULT '[]',
    next_bucket   bigint  NOT NULL DEFAULT 0 CHECK (next_bucket >= 0),
    created_at    bigint  NOT NULL,
    updated_at    bigint  NOT NULL
);

-- Windows Mobile Plans orders (MobilePlansOrder).
CREATE TABLE mobileplans_orders (
    id                  bigserial PRIMARY KEY,
    transaction_id      text    NOT NULL UNIQUE,
    operator            text    NOT NULL,
    kind                text    NOT NULL CHECK (kind IN ('Profile', 'Balance')),
    eid                 text,
    iccid               text    NOT NULL,
    matching_id         text,
    -- Network registration: NULL minutes is Now, a number is Later.
    registration_interval_minutes integer CHECK (registration_interval_minutes >= 0),
    release_at          bigint,
    released_at         bigint,
    release_error       text,
    status              text    NOT NULL CHECK (status IN ('open', 'cancelled', 'withdrawn',
                            'lapsed')),
    status_at           bigint  NOT NULL,
    -- Purchase metadata (Choice::as_str) and the plan name.
    user_account        text    NOT NULL,
    purchase_instrument text    NOT NULL,
    line                text    NOT NULL,
    plan_name           text    NOT NULL,
    bucket              text,
    created_at          bigint  NOT NULL,
    updated_at          bigint  NOT NULL,
    hold_until          bigint,
    confirmed_at        bigint
);

-- Orders of a line, and of an eUICC.
CREATE INDEX mobileplans_orders_iccid ON mobileplans_orders (iccid, id);
CREATE INDEX mobileplans_orders_eid ON mobileplans_orders (eid, id) WHERE eid IS NOT NULL;
-- Scheduled releases still to do (the status table's "release pending":
-- an open profile order, not released, not failed, not held), for the
-- sweeper.
CREATE INDEX mobileplans_orders_release ON mobileplans_orders (release_at, id)
    WHERE status = 'open' AND kind = 'Profile' AND release_at IS NOT NULL
      AND released_at IS NULL AND release_error IS NULL
      AND (hold_until IS NULL OR confirmed_at IS NOT NULL);
-- Portal holds awaiting their confirmation, for the sweeper.
CREATE INDEX mobileplans_orders_hold ON mobileplans_orders (hold_until, id)
    WHERE status = 'open' AND kind = 'Profile' AND hold_until IS NOT NULL
      AND confirmed_at IS NULL;
