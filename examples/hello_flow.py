"""A small nbflow flow: parallel tasks, a retry, a cached task and run logs.

Run it with::

    nbflow run examples/hello_flow.py:hello -p name=world -p n=3
    nbflow runs show <the run id it prints>

Run it twice: the second run's ``greeting`` task is ``Cached`` (same inputs, same source).
"""

from __future__ import annotations

import random
import time

from nbflow import flow, get_run_logger, task


@task(cache_policy="inputs")
def greeting(name: str) -> str:
    """Build the greeting (cached: a second run with the same name skips the work)."""
    time.sleep(0.2)  # stands in for something expensive
    return f"Hello, {name}!"


@task(retries=3, retry_delay_seconds=0.1)
def flaky_square(i: int) -> int:
    """Square ``i``, failing now and then to show retries."""
    if random.random() < 0.3:
        raise ConnectionError(f"transient failure while squaring {i}")
    return i * i


@task
def total(values: list[int]) -> int:
    """Add the squares."""
    return sum(values)


@flow(name="hello")
def hello(name: str = "world", n: int = 3) -> str:
    """Greet ``name`` and add the squares of 0..n-1, in parallel."""
    logger = get_run_logger()
    text = greeting(name)
    logger.info("%s", text)
    futures = [flaky_square.submit(i) for i in range(n)]
    result = total([f.result() for f in futures])
    logger.info("sum of squares below %d is %d", n, result)
    return f"{text} The sum of squares below {n} is {result}."


if __name__ == "__main__":
    print(hello())
