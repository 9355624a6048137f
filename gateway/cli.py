"""`dialout-gw`: the command-line entry point."""

from __future__ import annotations

import argparse
import importlib
import sys

from gateway import __version__
from gateway.commands import COMMAND_MODULES
from gateway.config import ConfigError

DESCRIPTION = """\
SIP dial-out gateway between a conference bridge and a PSTN trunk.

For every INVITE from the bridge it normalises the destination to E.164,
checks the meeting organiser's entitlements and roaming rules, then relays
the call to the trunk (B2BUA, SDP passed through) or rejects it with a SIP
status, a Reason header and a one-line JSON log that says why. Answered
minutes are metered durably and the call is cut when the entitlement ends.
"""

EPILOG = """\
examples:
  dialout-gw run --config examples/gateway.toml
  dialout-gw explain --config examples/gateway.toml --organizer alice@contoso.com --number +33142685300
  dialout-gw COMMAND --help      options of one command

exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration.
"""


class UserError(Exception):
    """A mistake by the operator (bad config, bad flag, missing file).

    Reported as one clear line on stderr with exit code 2, never a traceback,
    with any URL password redacted.
    """


def version_text() -> str:
    """The gateway's version, and the pjproject build under it (scripts/build_pjsua2.sh
    records the version and the source's sha256 in the wheel)."""
    try:
        import pjsua2_build as build
    except ImportError:
        return f"dialout-gw {__version__}\npjproject: not installed (run scripts/setup.sh)"
    return (
        f"dialout-gw {__version__}\npjproject {build.PJPROJECT_VERSION} from {build.SOURCE}\n"
        f"  source sha256 {build.SOURCE_SHA256}\n  config_site.h sha256 {build.CONFIG_SITE_SHA256}\n"
        f"  build key {build.BUILD_KEY}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dialout-gw",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"gateway.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (UserError, ConfigError) as exc:
        from sip.privacy import redact_url

        # A bad store.url is quoted back to the operator: without its password.
        print(redact_url(f"dialout-gw {args.command}: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # `python -m gateway.cli` runs this file as __main__; use the importable
    # module's main so that its UserError is the one commands raise.
    from gateway.cli import main as _main

    sys.exit(_main())
