"""Data of Section 3 and App. C/G.1: tasks, rendering, the reference renderer, contrastive sets, image io."""
