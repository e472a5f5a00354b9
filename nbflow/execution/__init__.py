"""``nbflow execute``: run a flow run's notebook through papermill in a fresh kernel.

``executor`` is the only module that imports papermill; ``kernels`` starts kernels and is
cheap to import, so the executor can boot a kernel before the heavy imports; ``reporter``
ships cell output and heartbeats from a thread.
"""
