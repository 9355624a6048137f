"""Offline tools for operators: reading the gateway's logs (`ops.logs`).

Pure Python (stdlib only). Nothing here imports `gateway` or pjsua2, so the
tools run wherever the log file is, without the SIP stack, the config or the
database (tests/test_layering.py keeps it that way). `gateway.commands` puts
a CLI on top (`dialout-gw logs`).
"""
