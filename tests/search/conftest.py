import pytest
import ray


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (2 CPUs) shared by the in-process end-to-end tests."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
