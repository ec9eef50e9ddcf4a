"""Allow ``python -m medseg`` (and ``torchrun -m medseg``)."""

from medseg.cli.app import main

main()
