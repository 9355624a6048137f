import pytest

from tests.integration.gateway_proc import GatewayProcess


def _close(gw: GatewayProcess) -> None:
    """Every gateway a test started ends clean: no leaked call, JSON-only stdout."""
    try:
        gw.assert_no_leaks()
    finally:
        gw.stop()
    gw.assert_stdout_is_json()


@pytest.fixture
def gateway(tmp_path):
    """The real gateway on free loopback ports, example directory, SQLite ledger."""
    gw = GatewayProcess.create(tmp_path / "gw").start()
    yield gw
    _close(gw)


@pytest.fixture
def make_gateway(tmp_path):
    """Factory for a gateway with config overrides; every one is checked and stopped at the end."""
    started = []

    def make(name="gw", **kwargs):
        gw = GatewayProcess.create(tmp_path / name, **kwargs).start()
        started.append(gw)
        return gw

    yield make
    errors = []
    for gw in started:
        try:
            _close(gw)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, errors
