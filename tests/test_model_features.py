"""Feature building: fixed names and order, row and matrix agree."""
import math
import typing

import numpy as np
import pytest

from stack.model.data import generate_customers, generate_transactions
from stack.model.features import (
    FEATURE_NAMES,
    MERCHANT_CATEGORIES,
    MerchantCategory,
    build_features,
    build_matrix,
)

CUSTOMER = {"customer_id": 1, "home_country": "GB", "account_age_days": 30,
            "avg_amount_30d": 50.0, "txn_count_30d": 4, "chargebacks_1y": 1}
TXN = {"customer_id": 1, "amount": 100.0, "merchant_category": "gaming", "country": "US",
       "hour": 6, "is_online": True}


def test_feature_names_are_fixed():
    assert FEATURE_NAMES == ("amount_log", "amount_ratio", "hour_sin", "hour_cos", "is_online",
                             "is_foreign", "merchant_risk", "account_age_days",
                             "txn_count_30d", "chargebacks_1y")


def test_categories_match_the_request_literal():
    assert tuple(MERCHANT_CATEGORIES) == typing.get_args(MerchantCategory)
    assert all(0.0 <= r <= 1.0 for r in MERCHANT_CATEGORIES.values())


def test_build_features_shape_and_values():
    row = build_features(TXN, CUSTOMER)
    assert row.shape == (1, len(FEATURE_NAMES)) and row.dtype == np.float64
    f = dict(zip(FEATURE_NAMES, row[0]))
    assert f["amount_log"] == pytest.approx(math.log1p(100.0))
    assert f["amount_ratio"] == pytest.approx(2.0)
    assert f["hour_sin"] == pytest.approx(1.0) and f["hour_cos"] == pytest.approx(0.0, abs=1e-12)
    assert f["is_online"] == 1.0 and f["is_foreign"] == 1.0
    assert f["merchant_risk"] == MERCHANT_CATEGORIES["gaming"]
    assert (f["account_age_days"], f["txn_count_30d"], f["chargebacks_1y"]) == (30, 4, 1)


def test_home_country_from_postgres_char2_is_not_foreign():
    row = build_features({**TXN, "country": "GB"}, {**CUSTOMER, "home_country": "GB"})
    assert dict(zip(FEATURE_NAMES, row[0]))["is_foreign"] == 0.0


def test_matrix_matches_rows():
    customers = generate_customers(40)
    txns, _ = generate_transactions(customers, 300)
    by_id = {c["customer_id"]: c for c in customers}
    X = build_matrix(txns, by_id)
    assert X.shape == (300, len(FEATURE_NAMES))
    rows = np.vstack([build_features(t, by_id[t["customer_id"]]) for t in txns])
    np.testing.assert_allclose(X, rows)
    assert build_matrix([], by_id).shape == (0, len(FEATURE_NAMES))
