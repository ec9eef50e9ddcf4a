"""Runtime: the torch device and torchrun process groups."""
