"""The notebook front end: magics, their arguments and commands, the widget, notebook files,
cell analysis.

Contract: this layer sits on top of the engine and the client; nothing below it (domain,
orchestration, client, engine, runners) imports it.
"""
