"""One module per `dialout-gw` subcommand.

Each module exposes `register(subparsers)`, which adds its parser and sets
`handler` to a function `(args) -> int`. Modules import heavy dependencies
(pjsua2, psycopg) inside the handler, so `--help` stays fast.
"""

# Order is the order shown in `dialout-gw --help`.
COMMAND_MODULES = (
    "run",
    "explain",
    "usage",
    "db",
    "directory",
    "logs",
)
