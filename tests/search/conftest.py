import pytest
import ray


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray (2 CPUs) for one module's in-process end-to-end tests."""
    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
