"""Section 5: mitigating the hidden-rule violations by classifier guidance and by filtering.

The package, by part:

* :mod:`~empirics.mitigation.classifier`: the time-conditioned classifier f_theta(x_t, t) and NT-Xent, eq. (3);
* :mod:`~empirics.mitigation.classifier_train`: training it on noised contrastive data, loading it, its accuracy;
* :mod:`~empirics.mitigation.guide`: guidance schedules and :class:`ClassifierGuide` (App. G.1);
* :mod:`~empirics.mitigation.filters`: the pixel-space filter classifiers and filters (App. G.2);
* :mod:`~empirics.mitigation.table2`: all of it on DDPM run folders, and Table 2's numbers.

``empirics.guidance`` (classifier, training, guide) and ``empirics.filtering`` (filters) are faces of
these modules; this package's own names are Table 2's helpers.
"""

from empirics.mitigation.table2 import (
    ACCURACY_T,
    CLASSIFIER_DIR,
    FILTERS_DIR,
    HELDOUT_PER_CLASS,
    HELDOUT_SEED,
    best_filter,
    classifier_dir,
    filter_path,
    guided_sets,
    table2_row,
    train_run_classifier,
    train_run_filter,
)

__all__ = ["CLASSIFIER_DIR", "FILTERS_DIR", "HELDOUT_SEED", "HELDOUT_PER_CLASS", "ACCURACY_T", "classifier_dir",
           "filter_path", "best_filter", "train_run_classifier", "train_run_filter", "guided_sets", "table2_row"]
