"""Synthetic data: deterministic, shaped like the schema and the API, plausible fraud rate."""
import re
from pathlib import Path

import numpy as np

from stack.model.data import COUNTRIES, generate_customers, generate_transactions
from stack.model.features import MERCHANT_CATEGORIES

SCHEMA = Path(__file__).resolve().parents[1] / "stack" / "components" / "schema.sql"


def _table_columns(table: str) -> list[str]:
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\);", SCHEMA.read_text(),
                     re.S).group(1)
    return [line.split()[0] for line in body.strip().splitlines()]


def test_customers_match_the_customers_table():
    customers = generate_customers(50, seed=1)
    assert [c["customer_id"] for c in customers] == list(range(1, 51))
    for c in customers:
        assert list(c) == _table_columns("customers")
        assert c["home_country"] in COUNTRIES
        assert c["account_age_days"] >= 1 and c["avg_amount_30d"] >= 1.0
        assert c["txn_count_30d"] >= 0 and c["chargebacks_1y"] >= 0


def test_same_seed_same_data_other_seed_other_data():
    assert generate_customers(30, seed=3) == generate_customers(30, seed=3)
    assert generate_customers(30, seed=3) != generate_customers(30, seed=4)
    customers = generate_customers(30, seed=3)
    t1, y1 = generate_transactions(customers, 500, seed=3)
    t2, y2 = generate_transactions(customers, 500, seed=3)
    assert t1 == t2 and np.array_equal(y1, y2)


def test_transactions_look_like_api_requests():
    customers = generate_customers(100)
    txns, labels = generate_transactions(customers, 2000)
    assert len(txns) == len(labels) == 2000
    for t in txns:
        assert set(t) == {"customer_id", "amount", "merchant_category", "country", "hour",
                          "is_online"}
        assert 1 <= t["customer_id"] <= 100
        assert 0 < t["amount"] <= 1_000_000
        assert t["merchant_category"] in MERCHANT_CATEGORIES
        assert re.fullmatch(r"[A-Z]{2}", t["country"])
        assert 0 <= t["hour"] <= 23 and isinstance(t["is_online"], bool)


def test_fraud_rate_is_plausible():
    customers = generate_customers(2000)
    _, labels = generate_transactions(customers, 40000)
    assert set(np.unique(labels)) == {0, 1}
    assert 0.03 <= labels.mean() <= 0.08
