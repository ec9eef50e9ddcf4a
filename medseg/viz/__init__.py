"""Stage: pictures. Training curve and FROC (``plots``), worst-case overlays (``overlays``),
``medseg show`` (``show``).
"""
