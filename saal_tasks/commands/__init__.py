"""The command-line programs (``saal-train``, ``saal-import``; ``tools/*.py`` in a checkout).

Each module holds one program's ``parse_args`` and ``main(argv) -> exit code``; the shared
pieces (config loading, one-line errors, the commands a run prints) are in
:mod:`saal_tasks.cli`.
"""
