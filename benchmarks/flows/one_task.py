"""A one-task flow: what ``nbflow run`` costs as a whole process (benchmark (d))."""

from nbflow import flow, task


@task
def noop(i: int) -> int:
    return i


@flow
def one() -> int:
    return noop(1)
