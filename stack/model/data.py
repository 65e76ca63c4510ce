"""Deterministic synthetic customers and transactions with a hidden fraud rule."""
from __future__ import annotations

from typing import Any

import numpy as np

from stack.model.features import MERCHANT_CATEGORIES

COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "NL", "BR", "IN", "NG")
_COUNTRY_WEIGHTS = np.array([0.30, 0.15, 0.12, 0.10, 0.08, 0.10, 0.10, 0.05])
_CATEGORIES: tuple[str, ...] = tuple(MERCHANT_CATEGORIES)
_CATEGORY_WEIGHTS = np.array([0.26, 0.20, 0.14, 0.08, 0.10, 0.07, 0.05, 0.10])
# Hour-of-day weights: quiet at night, busy during the day.
_HOUR_WEIGHTS = np.array([1, 0.7, 0.5, 0.4, 0.4, 0.6, 1.2, 2.5, 3.5, 4, 4.2, 4.5,
                          5, 4.8, 4.4, 4.2, 4.4, 4.8, 5, 4.6, 3.8, 3, 2.2, 1.5])


def generate_customers(n: int = 2000, seed: int = 7) -> list[dict[str, Any]]:
    """Rows for the `customers` table, with customer_id 1..n."""
    rng = np.random.default_rng(seed)
    country = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_WEIGHTS)
    age = rng.gamma(shape=1.5, scale=500.0, size=n).astype(int) + 1
    avg = np.round(rng.lognormal(mean=3.8, sigma=0.7, size=n), 2)
    count = rng.poisson(lam=25, size=n)
    chargebacks = rng.poisson(lam=0.15, size=n)
    return [
        {
            "customer_id": i + 1,
            "home_country": COUNTRIES[country[i]],
            "account_age_days": int(min(age[i], 7300)),
            "avg_amount_30d": float(max(avg[i], 1.0)),
            "txn_count_30d": int(count[i]),
            "chargebacks_1y": int(chargebacks[i]),
        }
        for i in range(n)
    ]


def generate_transactions(
    customers: list[dict[str, Any]], n: int = 40000, seed: int = 7
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Transactions shaped like the API's request body, and their fraud labels (0/1)."""
    rng = np.random.default_rng(seed + 1)
    who = rng.integers(0, len(customers), size=n)
    avg = np.array([customers[i]["avg_amount_30d"] for i in who])
    # Most amounts sit near the customer's average; a few are far above it.
    spread = rng.lognormal(mean=0.0, sigma=0.6, size=n)
    spike = rng.random(n) < 0.05
    spread = np.where(spike, spread * rng.uniform(3, 15, size=n), spread)
    amount = np.clip(np.round(avg * spread, 2), 0.5, 50000.0)
    foreign = rng.random(n) < 0.10
    other_country = rng.integers(0, len(COUNTRIES), size=n)
    hour = rng.choice(24, size=n, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    online = rng.random(n) < 0.45
    category = rng.choice(len(_CATEGORIES), size=n, p=_CATEGORY_WEIGHTS)

    txns: list[dict[str, Any]] = []
    is_foreign = np.zeros(n, dtype=bool)
    for k in range(n):
        cust = customers[who[k]]
        country = cust["home_country"]
        if foreign[k]:
            pick = COUNTRIES[other_country[k]]
            if pick == country:
                pick = COUNTRIES[(other_country[k] + 1) % len(COUNTRIES)]
            country = pick
            is_foreign[k] = True
        txns.append({
            "customer_id": int(cust["customer_id"]),
            "amount": float(amount[k]),
            "merchant_category": _CATEGORIES[category[k]],
            "country": country,
            "hour": int(hour[k]),
            "is_online": bool(online[k]),
        })

    labels = _hidden_rule(rng, customers, who, amount, avg, is_foreign, hour, online, category)
    return txns, labels


def _hidden_rule(rng: np.random.Generator, customers: list[dict[str, Any]], who: np.ndarray,
                 amount: np.ndarray, avg: np.ndarray, is_foreign: np.ndarray, hour: np.ndarray,
                 online: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Fraud labels from a logistic rule plus noise (roughly 5% positives)."""
    risk = np.array([MERCHANT_CATEGORIES[_CATEGORIES[c]] for c in category])
    age = np.array([customers[i]["account_age_days"] for i in who], dtype=float)
    chargebacks = np.array([customers[i]["chargebacks_1y"] for i in who], dtype=float)
    ratio = amount / np.maximum(avg, 1.0)
    night = (hour <= 5) | (hour >= 23)
    logit = (
        -5.6
        + 1.3 * np.log(np.maximum(ratio, 0.1))
        + 1.4 * is_foreign
        + 0.9 * night
        + 0.7 * online
        + 2.4 * risk
        + 1.2 * (age < 60)
        + 0.8 * np.minimum(chargebacks, 3)
        + rng.normal(0.0, 0.8, size=len(amount))
    )
    prob = 1.0 / (1.0 + np.exp(-logit))
    return (rng.random(len(amount)) < prob).astype(np.int64)
