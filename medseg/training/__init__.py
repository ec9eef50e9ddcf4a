"""Stage: training. ``run.train`` prepares, opens the run and drives a ``trainer.Trainer``; one
optimisation step (``step``), state (``state``), validation (``validation``), best-epoch reports
(``reports``), operating point (``tune``), and the guard rails, precision, resume and loaders.
"""
