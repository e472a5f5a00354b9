"""Jupyter server for the galata UI tests: no token, a temporary root, the nbflow extension.

Everything the server, kernels and runs write goes under $JUPYTERLAB_GALATA_ROOT_DIR and the
HOME-redirecting variables that scripts/ui-test.sh exports.
"""

import os

from jupyterlab.galata import configure_jupyter_server

c = get_config()  # type: ignore[name-defined]  # noqa: F821
configure_jupyter_server(c)

if os.geteuid() == 0:
    c.ServerApp.allow_root = True
c.FileContentsManager.delete_to_trash = False
c.ServerApp.jpserver_extensions = {"nbflow_server": True}
# Quick service loops so scheduled runs appear and are dispatched promptly in the tests.
c.NbflowApp.scheduler_interval = 2.0
c.NbflowApp.monitor_interval = 2.0
