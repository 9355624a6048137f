import pytest

from tests.integration.gateway_proc import GatewayProcess


@pytest.fixture
def gateway(tmp_path):
    """The real gateway on free loopback ports, example directory, SQLite ledger."""
    gw = GatewayProcess.create(tmp_path / "gw").start()
    yield gw
    gw.stop()


@pytest.fixture
def make_gateway(tmp_path):
    """Factory for a gateway with config overrides; every one is stopped at the end."""
    started = []

    def make(name="gw", **kwargs):
        gw = GatewayProcess.create(tmp_path / name, **kwargs).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
