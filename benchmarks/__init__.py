"""minique against Huey's ``SqliteHuey``, side by side in one run: ``python -m benchmarks``.

Not part of the package. Each system runs in processes of its own (producers
in ``benchmarks.probe``, consumers through each system's own consumer command);
see ``docs/benchmarks.md`` for what each scenario measures.
"""
