"""Orchestration core: the transition policy (``policy``) and the store (``store``).

Every flow-run state change in nbflow, from the embedded client or from the server,
passes through :func:`nbflow.orchestration.policy.evaluate`.  The store is imported
lazily (``nbflow.orchestration.store``) because it pulls in SQLAlchemy.
"""
