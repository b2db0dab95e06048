import pytest

from tests.harness import STACKS, run_program


@pytest.fixture(scope="session")
def runs():
    """The whole program evaluated once per stack under mocks, shared by the graph tests."""
    return {stack: run_program(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def existing_run():
    """The l7 stack pointed at an existing GKE cluster instead of kind (with no KUBECONFIG of the test machine's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("KUBECONFIG", raising=False)
        return run_program("l7", {"target": "existing", "kubeContext": "gke_proj_europe-west1_lab", "platform": "gke"})
