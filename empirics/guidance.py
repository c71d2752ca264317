"""Classifier guidance toward the fine rule (Section 5, App. G.1): the public face of
``empirics.mitigation.classifier`` (f_theta(x_t, t), NT-Xent, eq. (3)), ``.classifier_train`` (training,
loading, accuracy) and ``.guide`` (schedules, :class:`ClassifierGuide`)."""

from empirics.mitigation.classifier import (
    CLASSIFIER_PRESET_NAMES,
    CLASSIFIER_PRESETS,
    N_CLASSES,
    PAPER_TRAIN_ACCURACY,
    RULE_CLASS,
    ClassifierConfig,
    ClassifierOutput,
    TimeConditionedClassifier,
    build_time_classifier,
    make_classifier_config,
    nt_xent,
)
from empirics.mitigation.classifier_train import (
    ClassifierFiles,
    ClassifierTrainSummary,
    LogColumn,
    classifier_accuracy,
    classifier_log_prob,
    load_classifier,
    train_classifier,
)
from empirics.mitigation.guide import ClassifierGuide, GuidanceKind, GuidanceSchedule, default_scale, paper_schedule

__all__ = [
    "N_CLASSES", "RULE_CLASS", "PAPER_TRAIN_ACCURACY", "nt_xent", "ClassifierConfig", "CLASSIFIER_PRESETS",
    "CLASSIFIER_PRESET_NAMES", "make_classifier_config", "ClassifierOutput", "TimeConditionedClassifier",
    "build_time_classifier", "ClassifierFiles", "ClassifierTrainSummary", "LogColumn", "train_classifier",
    "load_classifier", "classifier_log_prob", "classifier_accuracy", "GuidanceKind", "GuidanceSchedule",
    "default_scale", "paper_schedule", "ClassifierGuide",
]
