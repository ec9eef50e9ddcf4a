"""Stage: MONAI transforms. Deterministic preprocessing shared by training, validation and predict
(``preprocess``, ``labels``), lesion-balanced patch sampling (``sampling``), random augmentation
(``augment``).
"""
