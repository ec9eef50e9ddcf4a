"""Stage: evaluation. Lesion matching (``matching``), Dice and HD95 (``metrics``), per-case and
per-lesion tables (``tables``), FROC (``froc``), folders of masks (``evaluate``).
"""
