"""The script Kamailio's app_python3 loads: modparam("app_python3", "load", ".../dialout.py").

It only finds the project and its config, then hands over to
kamailio_plugin.kemi. Two settings, from the environment of the Kamailio
process (systemd: `Environment=` in a drop-in for kamailio.service) or edited
here:

  DIALOUT_SITE_PACKAGES  site-packages of the virtualenv that holds dialout-gateway
                         and its dependencies (phonenumbers, structlog, psycopg).
                         Kamailio embeds the system Python 3.11: a 3.11 venv. From a
                         shell whose PATH starts with a venv or pyenv, also set
                         PYTHONHOME=/usr so that it keeps the system standard library.
  DIALOUT_CONFIG         the gateway's TOML config (policy, trunk, ledger).
"""

import os
import site
import sys

SITE_PACKAGES = os.environ.get("DIALOUT_SITE_PACKAGES", "/opt/dialout-gateway/.venv/lib/python3.11/site-packages")
CONFIG = os.environ.get("DIALOUT_CONFIG", "/etc/dialout/gateway.toml")

if SITE_PACKAGES not in sys.path:
    site.addsitedir(SITE_PACKAGES)  # also reads its .pth files (an editable install's path entry)

from kamailio_plugin.kemi import handler_for  # noqa: E402


def mod_init():
    return handler_for(CONFIG)
