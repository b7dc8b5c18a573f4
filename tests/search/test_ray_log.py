"""RayLog: Ray's log lines go to RUN_DIR/ray.log, not the terminal, each as it comes once attached."""

import logging

from search.session import VERBOSE_ENV, RayLog


def test_ray_lines_reach_ray_log_as_they_come_and_the_terminal_handlers_return(tmp_path, monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    logger = logging.getLogger("ray")
    terminal = logging.StreamHandler()
    logger.addHandler(terminal)
    log = RayLog()
    try:
        log.start()
        assert terminal not in logger.handlers
        logging.getLogger("ray.tune").warning("before the run directory exists")
        log.attach(tmp_path)
        assert "before the run directory exists" in (tmp_path / "ray.log").read_text()
        logging.getLogger("ray.tune").warning("a later line")
        # on disk at once, not held until the session ends: a killed driver leaves it
        assert "WARNING ray.tune: a later line" in (tmp_path / "ray.log").read_text()
        log.stop()
        assert terminal in logger.handlers and log.file is None and log.held is None
        logging.getLogger("ray.tune").warning("after the session")
        assert "after the session" not in (tmp_path / "ray.log").read_text()
    finally:
        logger.removeHandler(terminal)
