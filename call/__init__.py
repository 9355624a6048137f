"""The lifecycle of one relayed call, sans I/O: events in, actions out.

``call.machine.Call`` is the B2BUA's call control (compare h11's
``_state.py`` and sippy's ``b2bua_simple``); ``call.events`` are its inputs
and ``call.actions`` its outputs. Nothing here imports pjsua2, a database
or a clock; gateway/engine.py translates both ways.
"""
