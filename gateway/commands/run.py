"""`dialout-gw run`: start the gateway and serve until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, datetime

DESCRIPTION = """\
Start the gateway: listen for the bridge's INVITEs on the configured
transports, decide each one, relay it to the trunk or reject it, and meter
answered minutes in the ledger (store.url).

Signals:
  SIGTERM, SIGINT  stop taking new calls (503 + Retry-After), let active calls
                   finish for up to gateway.drain_timeout_s, then end the rest
                   with a BYE, settle the ledger and exit 0.
  SIGHUP           reload the directory and policy from the config file; calls
                   in progress keep the decision they started with.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="start the gateway (SIP listener, relay, ledger)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config file")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config and the trunks (errors and warnings on stderr; exit 2 on an "
        "error), open the ledger, then exit without listening",
    )
    p.set_defaults(handler=handle)


def load_everything(path: str, *, strict: bool = True):
    """The config file, parsed and validated: (GatewayConfig, RuntimeSettings).

    With `strict`, an error that `check_trunks` finds (e.g. an unset `password_env`)
    fails like any config error; without, `run --check` reports them all."""
    from gateway.cli import UserError
    from gateway.config import load_config
    from gateway.settings import SettingsError, runtime_settings

    config = load_config(path)
    try:
        runtime = runtime_settings(config.sections, strict=strict)
    except SettingsError as exc:
        raise UserError(f"{path}: {exc}") from None
    return config, runtime


def report_trunk_findings(path: str, runtime, log, *, to_stderr: bool) -> int:
    """Log what `policy.routing.check_trunks` finds (and print it, for `--check`);
    returns the number of errors."""
    from policy.routing import check_trunks

    errors = 0
    for finding in check_trunks(runtime.trunks):
        level, _, text = finding.partition(": ")
        errors += level == "error"
        (log.error if level == "error" else log.warning)("trunk_check", config=path, finding=text)
        if to_stderr:
            print(f"dialout-gw run: {path}: {finding}", file=sys.stderr)
    return errors


def handle(args) -> int:
    from gateway.cli import UserError
    from gateway.logs import configure_logging, get_logger
    from sip.privacy import redact_url

    # Signals first: a SIGTERM during start-up must still end in a clean exit.
    state = {"stop_requested": False, "deadline": None, "reload": False}

    def on_stop(signum, _frame):
        state["stop_requested"] = True

    def on_hup(signum, _frame):
        state["reload"] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    # JSON from the first line: even a crash while reading the config is one log event.
    configure_logging()
    config, runtime = load_everything(args.config, strict=not args.check)
    configure_logging(
        runtime.logging.level,
        runtime.logging.format,
        mask_numbers=runtime.logging.mask_numbers,
        mask_fields=runtime.logging.mask_fields,
    )
    log = get_logger(component="main")
    # Trunk problems: warnings are logged; errors end `--check` with exit 2 (without --check,
    # load_everything has refused them already).
    if report_trunk_findings(args.config, runtime, log, to_stderr=args.check):
        return 2

    import pjsua2 as pj

    from gateway.sipstack import SipStack
    from store import StoreError
    from store.settings import open_from_settings

    try:
        store = open_from_settings(runtime.store, log=get_logger(component="ledger"))
        store.migrate()
    except StoreError as exc:
        # Not the operator's typo but the database: a runtime failure, exit 1.
        print(redact_url(f"dialout-gw run: store.url {runtime.store.url}: {exc}"), file=sys.stderr)
        return 1
    config = with_imported_directory(config, args.config, store, log)
    if args.check:
        log.info("config_ok", config=args.config, organizers=len(config.policy.organizers))
        store.close()
        return 0

    recovered = store.recover_open_calls(datetime.now(UTC))
    for s in recovered:
        log.warning(
            "call_recovered", call_id=s.call_id, talk_s=s.talk_s, billed_units=s.billed_units, charges=dict(s.charges)
        )

    stack = SipStack(pjsip_log_level=runtime.logging.pjsip_level)
    ledger = None
    try:
        for listener in runtime.listeners:
            try:
                stack.listen(listener)
            except pj.Error as exc:
                raise UserError(
                    f"cannot listen on {listener.transport} {listener.address}:{listener.port}: {exc.reason}"
                ) from None

        from gateway.service import GatewayService
        from store.writer import LedgerWriter

        metrics = None
        if runtime.metrics.port:
            from gateway.metrics import start_metrics

            metrics = start_metrics(runtime.metrics)
        # Every ledger operation from here on runs on the writer's thread, group-committed;
        # the SIP loop never waits for the database.
        store.close()
        try:
            ledger = LedgerWriter(
                runtime.store,
                stack.call_soon,
                log=get_logger(component="ledger"),
                linger_s=runtime.store.linger_ms / 1000,
                post_lazy=stack.call_soon_lazy,
            )
        except StoreError as exc:
            print(redact_url(f"dialout-gw run: store.url {runtime.store.url}: {exc}"), file=sys.stderr)
            return 1
        service = GatewayService(stack=stack, config=config, runtime=runtime, ledger=ledger, metrics=metrics)
        if metrics:
            metrics.bind(service)
        service.start()
        _settle_garbage_collector()

        log.info(
            "gateway_started",
            config=args.config,
            listen=[f"{li.transport}:{li.address}:{li.port}" for li in runtime.listeners],
            trunk=runtime.trunk.uri,
            store=runtime.store.url,
            recovered_calls=len(recovered),
            pjproject=_pjproject_version(),
        )

        def should_stop() -> bool:
            if state["reload"]:
                state["reload"] = False
                _reload(service, args.config, log)
            if state["stop_requested"] and state["deadline"] is None:
                state["deadline"] = time.monotonic() + runtime.drain_timeout_s
                service.begin_drain()
            if state["deadline"] is not None:
                return service.active == 0 or time.monotonic() >= state["deadline"]
            return False

        stack.run(should_stop)
        if service.active:
            log.warning("drain_timeout", active_calls=service.active)
            service.hangup_everything("the gateway is shutting down")
            end = time.monotonic() + 5
            while service.active and time.monotonic() < end:
                stack.poll(10)
        service.stop()
        # Let final responses, BYE transactions and the last ledger completions go out.
        for _ in range(20):
            stack.poll(5)
        log.info("gateway_stopped", active_calls=service.active, **stack.stats())
        if metrics:
            metrics.close()
    finally:
        if ledger is not None:
            ledger.stop(5.0)
        stack.shutdown()
        store.close()  # idempotent: closed already once the writer took over
    return 0


def _pjproject_version() -> str:
    try:
        import pjsua2_build

        return f"{pjsua2_build.PJPROJECT_VERSION} ({pjsua2_build.SOURCE_SHA256[:12]})"
    except ImportError:
        return "unknown"


def _settle_garbage_collector() -> None:
    """Startup objects (phonenumbers metadata, the directory, pjsua2 wrappers)
    live as long as the process: freeze them out of the collector's scans, and
    collect the young generation less often, since a call allocates a few
    thousand short-lived objects that reference counting already frees."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def with_imported_directory(config, path: str, store, log):
    """The config, plus tenants and organisers imported into the ledger."""
    from gateway.config import load_config

    tenants, organizers = store.directory_rows()
    if not (tenants or organizers):
        return config
    log.info("directory_from_ledger", tenants=len(tenants), organizers=len(organizers))
    return load_config(path, imported=(tenants, organizers))


def _reload(service, path: str, log) -> None:
    """SIGHUP: the file is read, and the imported directory loaded, on the ledger
    writer (a database read never blocks the SIP loop); the new config is then
    swapped in on the loop. A broken file is refused and the old config stays."""

    def load(store):
        config, _runtime = load_everything(path)
        return with_imported_directory(config, path, store, log)

    def done(result) -> None:
        if isinstance(result, BaseException):  # a bad edit must not take the gateway down
            log.error("config_reload_failed", config=path, error=str(result))
            return
        service.reload(result)

    service.ledger.submit(load, done)
