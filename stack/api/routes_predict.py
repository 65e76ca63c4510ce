"""POST /predict: look up the customer, score, record the prediction, answer."""
from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel

from stack.errors import ApiError
from stack.api import db
from stack.api.schemas import (
    INVALID,
    TOO_LARGE,
    Transaction,
    doc,
    error_body,
    uuid_string,
)
from stack.api.state import ApiState, get_state
from stack.model.features import build_features
from stack.model.registry import LoadedModel

log = logging.getLogger(__name__)

router = APIRouter()

DB_RETRY_AFTER_S = 1  # what a 503 for an unavailable database tells the client to wait


class Prediction(BaseModel):
    request_id: str
    score: float
    model_version: str
    replica: str


def _parse_key(key: str | None) -> uuid.UUID | None:
    if key is None:
        return None
    try:
        return uuid.UUID(key)
    except ValueError:
        raise ApiError(422, "invalid_request", [
            {"field": "Idempotency-Key", "message": "must be a UUID, e.g. "
             "123e4567-e89b-12d3-a456-426614174000"}]) from None


def _stored(row: dict[str, Any], inputs: dict[str, Any]) -> Prediction:
    if row["inputs"] != inputs:
        raise ApiError(409, "idempotency_key_reused",
                       f"request {row['request_id']} was already made with different inputs")
    return Prediction(request_id=str(row["request_id"]), score=row["score"],
                      model_version=row["model_version"], replica=row["replica"])


def _customer(st: ApiState, customer_id: int) -> dict[str, Any] | None:
    row = st.cache.get(customer_id)
    if row is None:
        row = db.fetch_customer(st.pool, customer_id, delay_ms=st.faults.current.db_delay_ms)
        if row is not None:
            st.cache.put(customer_id, row)
    return row


def _score(st: ApiState, model: LoadedModel, txn: dict[str, Any],
           customer: dict[str, Any]) -> float:
    try:
        score = float(model.predict_score(build_features(txn, customer))[0])
    except Exception as exc:
        st.metrics.predictions.labels("model_error").inc()
        log.exception("model %s failed to score", model.version)
        st.reporter.report(exc, cause="model", route="/predict")
        raise ApiError(500, "model_error", f"model {model.version} failed to score") from exc
    return score


# What /predict can answer besides 200, each with its error codes (an enum in the document).
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: doc("no customer with that customer_id",
             error_body("UnknownCustomer", "unknown_customer")),
    409: doc("this Idempotency-Key was used before with other inputs",
             error_body("IdempotencyKeyReused", "idempotency_key_reused")),
    413: TOO_LARGE,
    422: INVALID,
    500: doc("the model failed to score, or an error_rate fault fired",
             error_body("PredictFailed", "model_error", "internal_error")),
    503: doc("no model is loaded, or the database is unavailable; a database_unavailable "
             "answer carries Retry-After, after which a request with the same "
             "Idempotency-Key is safe to retry",
             error_body("PredictUnavailable", "model_not_loaded", "database_unavailable"),
             headers={"Retry-After": {
                 "description": "seconds to wait before retrying (database_unavailable only)",
                 "schema": {"type": "integer", "minimum": 0}}}),
}


@router.post("/predict", response_model=Prediction, responses=PREDICT_RESPONSES)
async def predict(
    txn: Transaction,
    request: Request,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key",
        description="a UUID that makes retries safe: the same key and inputs get the stored "
                    "answer, never a second prediction",
        json_schema_extra=uuid_string)] = None,
) -> Prediction:
    """Score a transaction and record it; an Idempotency-Key (UUID) makes retries safe."""
    # The work blocks (Redis, the model, Postgres), so it runs in the threadpool, in one trip.
    # A plain `def` endpoint would cost FastAPI a second trip, to validate the response.
    return await run_in_threadpool(_predict, get_state(request), txn, idempotency_key)


def _predict(st: ApiState, txn: Transaction, idempotency_key: str | None) -> Prediction:
    st.faults.on_predict()
    model = st.model  # one snapshot, so a reload mid-request cannot mix versions
    if model is None:
        st.metrics.predictions.labels("model_error").inc()
        raise ApiError(503, "model_not_loaded", f"no model is loaded: {st.model_error}")
    key = _parse_key(idempotency_key)
    request_id = key or uuid.uuid4()
    inputs = txn.model_dump()
    try:
        # No look-up of the key first: the insert below finds a repeated key by its
        # conflict, which saves a round trip on every first attempt (nearly all requests).
        customer = _customer(st, txn.customer_id)
        if customer is None:
            st.metrics.predictions.labels("unknown_customer").inc()
            raise ApiError(404, "unknown_customer",
                           f"customer {txn.customer_id} does not exist")
        score = _score(st, model, inputs, customer)
        if not db.insert_prediction(st.pool, request_id, txn.customer_id, inputs, score,
                                    model.version, st.settings.name):
            # The key was used before (a retry, or a request racing with it): answer with
            # the stored result, never a second prediction.
            row = db.fetch_prediction(st.pool, request_id)
            if row is None:
                raise ApiError(503, "database_unavailable", "prediction vanished after insert")
            st.metrics.predictions.labels("ok").inc()
            return _stored(row, inputs)
    except db.DB_ERRORS as exc:
        st.metrics.predictions.labels("db_error").inc()
        log.warning("database error on /predict: %s", db.describe_error(exc))
        st.reporter.report(exc, cause="database", route="/predict")
        # Retry-After: a failover or a database restart is seconds away from being over;
        # clients (and the lab's load client) with an Idempotency-Key retry safely after it.
        raise ApiError(503, "database_unavailable", db.describe_error(exc),
                       headers={"Retry-After": str(DB_RETRY_AFTER_S)}) from exc
    st.metrics.predictions.labels("ok").inc()
    return Prediction(request_id=str(request_id), score=score, model_version=model.version,
                      replica=st.settings.name)
