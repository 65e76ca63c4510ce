"""Turn a transaction and its customer's profile into the model's feature vector."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "amount_log",
    "amount_ratio",
    "hour_sin",
    "hour_cos",
    "is_online",
    "is_foreign",
    "merchant_risk",
    "account_age_days",
    "txn_count_30d",
    "chargebacks_1y",
)

MerchantCategory = Literal[
    "grocery", "restaurants", "fuel", "travel", "electronics", "gaming", "gift_cards", "other"
]

# Risk of each merchant category, from 0 (safe) to 1 (risky).
MERCHANT_CATEGORIES: dict[str, float] = {
    "grocery": 0.05,
    "restaurants": 0.10,
    "fuel": 0.15,
    "travel": 0.45,
    "electronics": 0.60,
    "gaming": 0.70,
    "gift_cards": 0.90,
    "other": 0.30,
}

# Floor for the customer's average amount, so a new customer's ratio stays finite.
_MIN_AVG_AMOUNT = 1.0


def build_features(txn: Mapping[str, Any], customer: Mapping[str, Any]) -> np.ndarray:
    """Feature row of shape (1, len(FEATURE_NAMES)) for one transaction."""
    amount = float(txn["amount"])
    angle = 2.0 * math.pi * int(txn["hour"]) / 24.0
    row = [
        math.log1p(amount),
        amount / max(float(customer["avg_amount_30d"]), _MIN_AVG_AMOUNT),
        math.sin(angle),
        math.cos(angle),
        1.0 if txn["is_online"] else 0.0,
        1.0 if str(txn["country"]) != str(customer["home_country"]).strip() else 0.0,
        MERCHANT_CATEGORIES[txn["merchant_category"]],
        float(customer["account_age_days"]),
        float(customer["txn_count_30d"]),
        float(customer["chargebacks_1y"]),
    ]
    return np.asarray([row], dtype=np.float64)


def build_matrix(
    txns: Sequence[Mapping[str, Any]], customers_by_id: Mapping[int, Mapping[str, Any]]
) -> np.ndarray:
    """Feature matrix of shape (len(txns), len(FEATURE_NAMES)), vectorised over columns."""
    if not txns:
        return np.empty((0, len(FEATURE_NAMES)), dtype=np.float64)
    custs = [customers_by_id[int(t["customer_id"])] for t in txns]
    amount = np.fromiter((float(t["amount"]) for t in txns), dtype=np.float64, count=len(txns))
    hour = np.fromiter((int(t["hour"]) for t in txns), dtype=np.float64, count=len(txns))
    avg = np.fromiter((float(c["avg_amount_30d"]) for c in custs), dtype=np.float64,
                      count=len(txns))
    angle = 2.0 * np.pi * hour / 24.0
    columns = [
        np.log1p(amount),
        amount / np.maximum(avg, _MIN_AVG_AMOUNT),
        np.sin(angle),
        np.cos(angle),
        np.array([1.0 if t["is_online"] else 0.0 for t in txns]),
        np.array([1.0 if str(t["country"]) != str(c["home_country"]).strip() else 0.0
                  for t, c in zip(txns, custs)]),
        np.array([MERCHANT_CATEGORIES[t["merchant_category"]] for t in txns]),
        np.array([float(c["account_age_days"]) for c in custs]),
        np.array([float(c["txn_count_30d"]) for c in custs]),
        np.array([float(c["chargebacks_1y"]) for c in custs]),
    ]
    return np.column_stack(columns).astype(np.float64, copy=False)
