"""The pjsua2 shell of dialout-gateway: endpoint, call legs, CLI and wiring.

This is the only package that imports pjsua2; `policy/` and `sip/` stay pure.
"""

__version__ = "0.1.0"
