-- Schema version 2 of the PostgreSQL store: what the record operations
-- need beyond version 1. Same conventions as V1 (Unix seconds in bigint,
-- no triggers, functions or extensions).

-- Ids of outbox items and Mobile Plans orders: one sequence for both, as
-- the sled store draws both from one counter. The outbox id is also the
-- ES2+ functionCallIdentifier, so it never repeats.
CREATE SEQUENCE record_ids START WITH 1;

-- GetBalance X-MS-DM-TransactionId values and their last recorded use:
-- a repeat within the window is refused. Pruned by age, oldest first.
CREATE TABLE balance_transaction_ids (
    id text   PRIMARY KEY,
    at bigint NOT NULL
);

CREATE INDEX balance_transaction_ids_at ON balance_transaction_ids (at, id);

-- The outbox per operator, oldest item first (queue depths and the age of
-- each operator's oldest item).
CREATE INDEX outbox_operator ON outbox (operator, id);

-- The open orders of an eUICC (the EID index of V1 also holds ended ones).
CREATE INDEX profiles_eid_pending ON profiles (eid, iccid)
    WHERE eid IS NOT NULL
      AND state IN ('Allocated', 'Linked', 'Confirmed', 'Released', 'Downloaded');
