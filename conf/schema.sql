-- seckilld schema: applied at start-up when the tables are missing (every statement is idempotent).
-- Statements end with ';' at the end of a line (bindings/mysql_schema.c splits the file there).

-- one row per sale item; the live stock and per-user counts are in Redis, this is the record of the set-up
CREATE TABLE IF NOT EXISTS items (
    item_id        VARCHAR(64)  NOT NULL,
    stock_initial  BIGINT       NOT NULL,
    limit_per_user INT          NOT NULL DEFAULT 1,
    starts_at      BIGINT       NULL,     -- sale window, milliseconds since the epoch; NULL: no bound
    ends_at        BIGINT       NULL,
    armed_at       BIGINT       NOT NULL DEFAULT 0, -- when this set-up happened (ms): orders before it belong to an earlier sale
    created_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (item_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- v1.1: the item's admission settings (require_token, token_ttl_ms, max_rps) as JSON; '' for none. Added to a
-- table created before v1.1 as well.
ALTER TABLE items ADD COLUMN IF NOT EXISTS admission VARCHAR(255) NOT NULL DEFAULT '';
-- v1.2, the waiting room (scripts/admission/queue.lua): places reserved for its late joiners; a queue Redis lost
-- starts again above them, so no place is handed out twice
ALTER TABLE items ADD COLUMN IF NOT EXISTS queue_ceiling BIGINT NOT NULL DEFAULT 0;
-- a waiting room's draw once sealed (admission/queue.lua's task copies it): the place each pre-start joiner drew, so
-- that a Redis loss after the start moves none of them back
CREATE TABLE IF NOT EXISTS queue_draws (
    item_id VARCHAR(64) NOT NULL,
    armed_at BIGINT NOT NULL,
    user_id VARCHAR(64) NOT NULL,
    place BIGINT NOT NULL,
    PRIMARY KEY (item_id, armed_at, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- one row per accepted order, written by the Kafka consumer; the primary key makes redelivery idempotent
CREATE TABLE IF NOT EXISTS orders (
    order_id   VARCHAR(64)  NOT NULL,
    item_id    VARCHAR(64)  NOT NULL,
    user_id    VARCHAR(64)  NOT NULL,
    quantity   INT          NOT NULL,
    status     VARCHAR(16)  NOT NULL DEFAULT 'created',
    created_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (order_id),
    KEY idx_orders_user_created (user_id, created_at),
    KEY idx_orders_item (item_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- v1.2, the order's life (API-v1.2.md, scripts/life/): `status` is created, paid, cancelled or expired, decided in
-- this row alone (a guarded UPDATE, or a payment's transaction holding the row); expires_at (ms) is the deadline of
-- an item with a payment step (NULL: none); `released` is 1 once a cancelled or expired order's units are back in
-- Redis (the release is idempotent by a marker in Redis; this flag only says the releaser is done with the row).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS expires_at BIGINT NULL;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS ended_at BIGINT NULL;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_id VARCHAR(64) NULL;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS released TINYINT NOT NULL DEFAULT 0;
-- One index serves both of the expire task's scans (created and due; cancelled or expired and not yet released), so
-- an expiry, which changes status, rewrites one secondary index entry rather than two (a mass expiry's cost).
ALTER TABLE orders ADD INDEX IF NOT EXISTS idx_orders_life (status, released, expires_at);

-- v1.2: each payment webhook's payment_id once, with the first answer (replayed byte for byte to a retry)
CREATE TABLE IF NOT EXISTS payments (
    payment_id VARCHAR(64)  NOT NULL,
    order_id   VARCHAR(64)  NOT NULL,
    amount     BIGINT       NOT NULL,
    outcome    VARCHAR(16)  NOT NULL,
    reason     VARCHAR(16)  NULL,
    answer     TEXT         NOT NULL,
    created_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (payment_id),
    KEY idx_payments_order (order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
