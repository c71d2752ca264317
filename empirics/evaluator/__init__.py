"""The rule evaluator (Fig. 2 pipeline) by stage, and the metrics, controls, marginals and memorization
measures built on it (Section 3, App. D)."""
