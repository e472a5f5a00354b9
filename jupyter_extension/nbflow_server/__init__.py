"""nbflow's Jupyter server extension: the orchestration REST API, event stream and services.

Enable it with ``jupyter server extension enable nbflow_server`` (installing the wheel does
it through ``etc/jupyter/jupyter_server_config.d/nbflow_server.json``) or run a headless
server with only this extension: ``nbflow server``.
"""

from __future__ import annotations

from typing import Any

from nbflow_server.app import NbflowApp

__all__ = ["NbflowApp"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Tell jupyter_server where the extension's app lives."""
    return [{"module": "nbflow_server", "app": NbflowApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Tell JupyterLab where the built side panel (labextension) lives."""
    return [{"src": "labextension", "dest": "nbflow-labextension"}]
