-- The generation of each tenant's webhook secret (the secret itself is derived, never stored).
-- No row: generation 0. A rotation adds one; for a day the previous generation signs too.
CREATE TABLE webhook_secrets (
    tenant          text PRIMARY KEY,
    generation      integer NOT NULL,
    previous_until  timestamptz NOT NULL
);
