"""The fraud model: synthetic data, features, training and a verified model registry."""
from stack.model.data import COUNTRIES, generate_customers, generate_transactions
from stack.model.features import (
    FEATURE_NAMES,
    MERCHANT_CATEGORIES,
    MerchantCategory,
    build_features,
    build_matrix,
)
from stack.model.registry import (
    LoadedModel,
    ModelEntry,
    latest_version,
    list_versions,
    load_verified,
    read_manifest,
    save_model,
    sha256_file,
    verify_version,
)

__all__ = [
    "COUNTRIES", "FEATURE_NAMES", "MERCHANT_CATEGORIES", "LoadedModel", "MerchantCategory",
    "ModelEntry", "build_features", "build_matrix", "generate_customers",
    "generate_transactions", "latest_version", "list_versions", "load_verified",
    "read_manifest", "save_model", "sha256_file", "train_model", "verify_version",
]


def __getattr__(name: str):
    # Imported lazily so `python -m stack.model.train` runs without a runpy warning; named
    # train_model because the attribute `train` is the submodule once it is imported.
    if name == "train_model":
        from stack.model.train import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
