"""The command line: parses options, calls one library job per command, renders tables or `--json`.

Owns: `entry` (the console script: signals, one-line errors, exit codes), `app` (the Typer app),
one module per command, and the shared option, error and rendering helpers. Nothing in the library
prints or exits; everything is done here. May import every package; nothing imports it.
This `__init__` stays light: `entry` installs its signal handlers before anything heavy is imported.
"""
