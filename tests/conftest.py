"""Fixtures only; helpers live in tests/support.py."""

from __future__ import annotations

import itertools
import uuid

import pytest

from tests.support import Mosquitto

_counter = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One private Mosquitto for the session (tests that kill a broker use ``fresh_broker``)."""
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"), extra="max_queued_messages 1000000\n").start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def fresh_broker(tmp_path):
    """A Mosquitto of this test's own, which the test may stop, kill or restart."""
    made = []

    def start(extra: str = "max_queued_messages 1000000\n", **kwargs) -> Mosquitto:
        mosquitto = Mosquitto(tmp_path / f"mosquitto{len(made)}", extra=extra, **kwargs).start()
        made.append(mosquitto)
        return mosquitto

    yield start
    for mosquitto in made:
        mosquitto.kill()


@pytest.fixture
def ns():
    """A unique prefix for this test's topics and client ids on the shared broker."""
    return f"t{next(_counter)}{uuid.uuid4().hex[:6]}"
