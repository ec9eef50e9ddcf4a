"""Planning: dataset fingerprint -> proposed spacing, patch and normalisation (``medseg plan``,
``plan.yaml``) -> the resolved :class:`medseg.config.plan.Plan` every later stage reads."""
