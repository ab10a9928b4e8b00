"""The framework-free half of every worker: the training run (driver), its position and
time accounting (progress), checkpoint files, divergence rules, LR and batch-size schedules,
the global-batch sampler, the MLPerf log, the gradient-noise scale and the roofline.

A backend (``lbbench/backends/<fw>``) supplies the framework parts; nothing here imports a
framework, and nothing here imports the suite front end (``lbbench/suite``): the worker gets a
resolved RunSpec and never re-reads a suite. ``tests/test_import_hygiene.py`` checks both.
"""
