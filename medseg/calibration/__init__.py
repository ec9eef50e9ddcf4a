"""Calibration of a trained model: the operating point (threshold, minimum lesion volume) chosen
on validation cases, and the FROC curve (``medseg tune``)."""
