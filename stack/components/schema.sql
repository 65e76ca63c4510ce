-- The fraud-scoring API's database: customer features it reads, predictions it records.
CREATE TABLE IF NOT EXISTS customers (
    customer_id      integer PRIMARY KEY,
    home_country     char(2)          NOT NULL,
    account_age_days integer          NOT NULL,
    avg_amount_30d   double precision NOT NULL,
    txn_count_30d    integer          NOT NULL,
    chargebacks_1y   integer          NOT NULL
);

CREATE TABLE IF NOT EXISTS predictions (
    request_id    uuid             PRIMARY KEY,
    customer_id   integer          NOT NULL,
    inputs        jsonb            NOT NULL,
    score         double precision NOT NULL,
    model_version text             NOT NULL,
    replica       text             NOT NULL,
    created_at    timestamptz      NOT NULL DEFAULT now(),
    -- the port of the server that took the write: with two nodes, which one was primary
    written_on    integer          NOT NULL DEFAULT inet_server_port()
);
