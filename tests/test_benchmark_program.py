"""Benchmark: one evaluation of the whole program under mocks, per stack (median of five)."""

import statistics
import time

import pytest

from tests.harness import STACKS, run_program

BUDGET_SECONDS = 2.0


@pytest.mark.benchmark
@pytest.mark.parametrize("stack", STACKS)
def test_program_evaluation_median(stack, capsys):
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        run_program(stack)
        timings.append(time.perf_counter() - started)
    median = statistics.median(timings)
    with capsys.disabled():
        print(f"\n[benchmark] program evaluation under mocks, stack {stack}: median {median * 1000:.0f} ms of 5")
    assert median < BUDGET_SECONDS
