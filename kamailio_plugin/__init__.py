"""dialout-gateway as a Kamailio plugin: the entitlement decision and the ledger
inside a stateless proxy, instead of the B2BUA (see docs/kamailio.md).

- `settings`: the gateway's TOML file, read by the gateway's own parsers;
- `core`: the decision, reservation, settlement and grant extension, with no
  Kamailio in sight (testable without a proxy);
- `kemi`: the methods Kamailio's app_python3 calls (`python_exec`), the only
  module that imports `KSR`.

Kamailio loads a small script (examples/kamailio/dialout.py) whose
`mod_init()` returns `kamailio_plugin.kemi.handler_for(CONFIG)`.
"""
