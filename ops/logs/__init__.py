"""Read the gateway's JSON log: a summary of many calls, or everything about one.

Pure: stdlib only, no pjsua2, no clock. `gateway.commands.logs` is the thin
CLI on top (`dialout-gw logs`).

The gateway writes one JSON object per line (structlog's JSONRenderer). The
canonical per-call line has `"event": "call"` (see `GatewayService._canonical_line`);
`admission_refused` lines count refusals that never became calls. Anything
else (pjsip lines, lifecycle events, non-JSON noise) is counted, not parsed.

Modules, in the order the data flows:

- `reading`: open a path, '-' or a stream (plain or gzip), cut it into blocks of lines;
- `filters`: `--tenant/--since/--until/--reason` and their compiled form;
- `summary`: the `summary` counts, in one process or several;
- `lookup`: everything about one Call-ID;
- `render`: the human tables.
"""

from ops.logs.filters import Filters, parse_time
from ops.logs.lookup import CallReport, find_call, find_call_path
from ops.logs.reading import LogInputError, iter_blocks, line_batches, open_log, split_lines
from ops.logs.render import format_call, format_summary
from ops.logs.summary import Summary, default_jobs, percentile, summarize, summarize_path

__all__ = [
    "CallReport",
    "Filters",
    "LogInputError",
    "Summary",
    "default_jobs",
    "find_call",
    "find_call_path",
    "format_call",
    "format_summary",
    "iter_blocks",
    "line_batches",
    "open_log",
    "parse_time",
    "percentile",
    "split_lines",
    "summarize",
    "summarize_path",
]
