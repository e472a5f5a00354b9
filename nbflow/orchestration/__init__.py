"""Orchestration core: the run lifecycle, the transition policy and the store.

:class:`nbflow.orchestration.lifecycle.FlowRunLifecycle` is the one owner of flow runs: it
creates, validates, cancels, retries and closes them out (the embedded client is it; the
server builds one).  Every flow-run state change passes through
:func:`nbflow.orchestration.policy.evaluate`.  The store and the lifecycle are imported
lazily (``nbflow.orchestration.store``) because they pull in SQLAlchemy.
"""
