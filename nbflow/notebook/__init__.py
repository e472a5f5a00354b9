"""The notebook front end: magics, their arguments and commands, the widget, notebook files,
cell analysis, and deploying a notebook.

``magics.py`` registers ``%%flow``/``%%task``/``%nbflow``; its ``NotebookSession`` is made of
parts that each own one group of state: ``kernel.py`` (the notebook's path, the executing
cell), ``interactive.py`` (the interactive flow run: its start, cancel and finish),
``cell_graph.py`` (the task cells' DAG, staleness, cache keys), ``display.py`` (the live
widget of ``widget.py``) and ``server_commands.ServerLink`` (the server, the deployment).
``resume.py`` says what a run resumed after a failure may reuse; ``cell_runner.py`` runs a
``%%task`` cell and ``cell_logs.py`` ships its output to the run's logs.

Contract: a front end on top of the engine and the client; nothing below it (domain,
orchestration, client, engine, runners, dispatch) imports it.  The other front ends may:
``nbflow execute`` and the CLI read notebooks (``document.py``) and deploy them
(``deploy.py``) through it.  ``tests/test_layout.py`` checks this.
"""
