"""Stage: datasets. Cases and the layouts they come in (``case``, ``sources``), ``medseg check``
(``check``), ``medseg plan`` (``plan``), splits (``split``), the synthetic generator (``synthetic``).
"""
