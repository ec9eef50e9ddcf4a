"""Stage: prediction. A model from its checkpoint (``model``), one scan (``predictor``), back onto
the scan's grid (``restore``), many scans and their outputs (``batch``), per-lesion tables
(``lesion_table``), the MLflow pyfunc (``pyfunc``).
"""
