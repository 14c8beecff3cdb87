"""A request aiohttp cannot parse is the client's fault: one INFO line in the node's log, not an ERROR trace."""
from __future__ import annotations

import logging

from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestPayloadError

import pytest

from raftqueue.server import client_errors_at_info


@pytest.fixture(autouse=True)
def _node_log_level_info():
    """As a node runs by default (--log-level INFO)."""
    logger = logging.getLogger("aiohttp.server")
    saved = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(saved)


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException as raised:  # noqa: BLE001 - building exc_info as aiohttp's logger.exception does
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                 ("127.0.0.1",), (type(raised), raised, raised.__traceback__))


def test_a_request_too_long_to_parse_is_logged_as_one_info_line():
    record = _record(LineTooLong(b"x" * 9000, "8190"))
    assert client_errors_at_info(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage().startswith("Error handling request from 127.0.0.1: LineTooLong")


def test_a_body_that_failed_to_decode_is_logged_as_one_info_line():
    record = _record(RequestPayloadError("400, message: Can not decode content-encoding: gzip"))
    assert client_errors_at_info(record)
    assert record.levelno == logging.INFO and record.exc_info is None


def test_a_demoted_record_is_one_line_and_obeys_the_log_level():
    record = _record(LineTooLong(b"x" * 9000, "8190"))
    assert client_errors_at_info(record) and "\n" not in record.getMessage()
    logging.getLogger("aiohttp.server").setLevel(logging.WARNING)
    assert not client_errors_at_info(_record(LineTooLong(b"x" * 9000, "8190")))  # --log-level WARNING: dropped


def test_other_errors_keep_their_level_and_traceback():
    record = _record(RuntimeError("a bug"))
    assert client_errors_at_info(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None
