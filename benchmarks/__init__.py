"""The project's benchmarks, one package per topic; shared helpers in :mod:`benchmarks.common`.

Not part of the installed package: run the scripts from the repository root as modules, e.g.
``python -m benchmarks.speed.fit_time --help``. ``benchmarks/README.md`` lists them.
"""
