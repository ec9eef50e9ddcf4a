"""Allow ``python -m medseg`` (and ``torchrun -m medseg``)."""

from medseg.cli import main

main()
