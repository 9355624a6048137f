"""The engine carries out every action the call machine can emit."""

from __future__ import annotations

import typing

from call import actions as A
from gateway.engine import Engine


class _Service:
    log = None

    def call_answered(self, handle):
        pass

    def extend_grant(self, handle):
        pass


def test_every_action_type_has_a_doer():
    engine = Engine(_Service(), stack=None)
    assert set(engine._doers) == set(typing.get_args(A.Action))
