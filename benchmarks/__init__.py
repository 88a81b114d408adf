"""minique against Huey's ``SqliteHuey``, side by side in one run: ``python -m benchmarks``.

``python -m benchmarks --postgres``: minique's PostgreSQL store against
Procrastinate 3 on the same server (``benchmarks/postgres.py``).

Not part of the package. Each system runs in processes of its own (producers
in ``benchmarks.probe``, consumers through each system's own consumer command);
see ``docs/benchmarks.md`` for what each scenario measures.
"""
