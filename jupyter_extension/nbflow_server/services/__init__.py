"""Background services of the server: scheduler, dispatcher and monitors.

Each service is a :class:`Service` with ``start``/``stop``; :class:`ServiceGroup` starts
them in order when the server's event loop runs and stops them in reverse order at
shutdown.  :class:`PeriodicService` is the base for loops that do one ``tick`` every
``interval`` seconds (a failing tick is logged, never kills the loop).
"""

from __future__ import annotations

from nbflow_server.services.base import PeriodicService, Service, ServiceGroup

__all__ = ["PeriodicService", "Service", "ServiceGroup"]
