"""Filtered DDPM (Section 5, App. G.2, Fig. 18): the public face of ``empirics.mitigation.filters``."""

from empirics.mitigation.filters import (
    FILE_FORMAT,
    PRESETS,
    RANDOM_SUBSET_DRAWS,
    Architecture,
    FilterConfig,
    TrainedFilter,
    as_model_input,
    build_filter_network,
    epoch_order,
    filter_config,
    filter_samples,
    load_filter,
    oracle_filter,
    predicted_class,
    random_subset_control,
    save_filter,
    train_filter,
    train_test_split,
)

__all__ = [
    "Architecture", "FilterConfig", "PRESETS", "filter_config", "build_filter_network", "as_model_input",
    "train_test_split", "epoch_order", "train_filter", "TrainedFilter", "predicted_class", "filter_samples",
    "oracle_filter", "random_subset_control", "RANDOM_SUBSET_DRAWS", "save_filter", "load_filter", "FILE_FORMAT",
]
