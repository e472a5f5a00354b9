"""Run loggers: ``get_run_logger()`` and the handler that ships records to the store.

Records of the ``nbflow.runs`` logger carry the flow run, task run and sink in ``extra``;
:class:`RunLogHandler` turns them into :class:`nbflow.schemas.Log` rows handed to the sink
(the recorder, which writes them in batches, or a Dask worker's collecting sink).
``log_prints`` routes ``print`` calls made inside a run to the same logger.
"""

from __future__ import annotations

import builtins
import io
import logging
import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from nbflow.engine.context import flow_run_context, task_run_context
from nbflow.engine.recorder import RunSink
from nbflow.exceptions import NbflowError
from nbflow.schemas import Log

__all__ = ["RunLogHandler", "get_run_logger", "install_print_hook", "run_logger_for"]

RUN_LOGGER_NAME = "nbflow.runs"


class RunLogHandler(logging.Handler):
    """Hand records of run loggers to their run's sink as :class:`Log` rows."""

    def emit(self, record: logging.LogRecord) -> None:
        """Convert ``record`` and give it to the sink named in its ``extra``."""
        sink: RunSink | None = getattr(record, "nbflow_sink", None)
        if sink is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            sink.log(
                Log.model_construct(
                    flow_run_id=getattr(record, "flow_run_id", None),
                    task_run_id=getattr(record, "task_run_id", None),
                    level=record.levelno,
                    logger=record.name,
                    message=message,
                    timestamp=datetime.fromtimestamp(record.created, UTC),
                )
            )
        except Exception:
            self.handleError(record)


_handler_lock = threading.Lock()


def _run_logger() -> logging.Logger:
    logger = logging.getLogger(RUN_LOGGER_NAME)
    if not any(isinstance(h, RunLogHandler) for h in logger.handlers):
        with _handler_lock:
            if not any(isinstance(h, RunLogHandler) for h in logger.handlers):
                from nbflow.settings import get_settings

                logger.addHandler(RunLogHandler())
                if logger.level == logging.NOTSET:
                    logger.setLevel(get_settings().logging_level)
    return logger


def run_logger_for(
    sink: RunSink, flow_run_id: UUID | None, task_run_id: UUID | None = None, name: str = ""
) -> logging.LoggerAdapter[logging.Logger]:
    """Return a logger adapter whose records go to ``sink`` for this flow/task run."""
    logger = _run_logger()
    if name:
        logger = logging.getLogger(f"{RUN_LOGGER_NAME}.{name}")
    extra = {"flow_run_id": flow_run_id, "task_run_id": task_run_id, "nbflow_sink": sink}
    return logging.LoggerAdapter(logger, extra)


def get_run_logger() -> logging.LoggerAdapter[logging.Logger]:
    """Return a logger bound to the current task run, else the current flow run.

    Raises :class:`NbflowError` outside a run.
    """
    task_ctx = task_run_context.get()
    if task_ctx is not None:
        return run_logger_for(task_ctx.sink, task_ctx.flow_run_id, task_ctx.task_run.id)
    flow_ctx = flow_run_context.get()
    if flow_ctx is not None:
        engine = flow_ctx.engine
        return run_logger_for(engine.sink, engine.flow_run.id)
    raise NbflowError(
        "get_run_logger() called outside a flow run or task run; call it inside a @flow or "
        "@task function (or after %%flow in a notebook)"
    )


# -- log_prints ----------------------------------------------------------------------------
_original_print = builtins.print
_print_installed = False


def _log_prints_enabled() -> bool:
    task_ctx = task_run_context.get()
    if task_ctx is not None:
        return task_ctx.options.log_prints
    flow_ctx = flow_run_context.get()
    return flow_ctx is not None and flow_ctx.engine.log_prints


def _print(*args: Any, **kwargs: Any) -> None:
    if _log_prints_enabled() and kwargs.get("file") is None:
        buffer = io.StringIO()
        _original_print(*args, **{**kwargs, "file": buffer})
        try:
            get_run_logger().info(buffer.getvalue().rstrip("\n"))
        except NbflowError:
            pass
    _original_print(*args, **kwargs)


def install_print_hook() -> None:
    """Route ``print`` to the run logger where ``log_prints`` is enabled (idempotent)."""
    global _print_installed
    with _handler_lock:
        if not _print_installed:
            builtins.print = _print
            _print_installed = True
