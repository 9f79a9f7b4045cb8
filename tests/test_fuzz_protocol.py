"""Property-based tests of the daemon's frame parser, message validation and socket handling.

Strategies and checks are shared with the long run (`python -m fuzz.run`, fuzz/README.md): here a
few hundred cases per property, the same ones every run (hypothesis profile "ci"; set
LOWKEY_FUZZ_PROFILE=long for more).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from PIL import Image

from fuzz.daemon import FUZZ_LIMITS, FuzzDaemon, check_socket
from fuzz.strategies import (Case, client_messages, frame_cases, frame_of, fuzz_settings,
                             header_cases, socket_cases)
from fuzz.targets import check_frame, check_message, check_round_trip
from lowkey_daemon.config import Limits

pytestmark = pytest.mark.timeout(120)

#: The daemon's default header limit.
MAX_HEADER_BYTES = Limits().max_header_bytes
#: Socket cases open a connection each: a fifth of the profile's count (40 in CI).
SOCKET_SHARE = 0.2


@fuzz_settings()
@given(frame_cases(MAX_HEADER_BYTES))
def test_any_frame_is_a_valid_message_or_a_bad_request(case):
    check_frame(case, MAX_HEADER_BYTES)


@fuzz_settings()
@given(header_cases())
def test_any_header_is_a_valid_message_or_a_bad_request(case):
    check_message(case)


@fuzz_settings()
@given(client_messages())
def test_valid_messages_survive_the_round_trip(message):
    check_round_trip(message, MAX_HEADER_BYTES)


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    with FuzzDaemon(tmp_path_factory.mktemp("fuzz-daemon")) as daemon:
        yield daemon


@fuzz_settings(examples_scale=SOCKET_SHARE)
@given(case=socket_cases(FUZZ_LIMITS.max_header_bytes, FUZZ_LIMITS.max_frame_bytes))
def test_the_daemon_answers_any_message_and_keeps_serving(fuzz_daemon, case):
    check_socket(fuzz_daemon, case)


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (90, 120, 150)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("body, payload", [
    (b"[" * 5000 + b"]" * 5000, b""),                             # RecursionError in json
    (b'{"type": "protect", "id": "\\ud800"}', b"img"),            # error echoing a lone surrogate
    # a result echoing one: it raised in the scheduler's worker task, which then served no one
    (b'{"type": "protect", "id": "a", "filename": "\\udfff"}', tiny_png()),
])
def test_frames_that_once_broke_the_daemon_are_answered(fuzz_daemon, body, payload):
    check_socket(fuzz_daemon, Case("regression", (frame_of(body, payload), True)))
