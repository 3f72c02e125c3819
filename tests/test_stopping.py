import os
import signal
from types import SimpleNamespace

import pytest

from toygpt_cli.stopping import STOP_SIGNALS, StopSwitch, signals_held

# a signal handler's frame inside an import
IN_AN_IMPORT = SimpleNamespace(f_code=SimpleNamespace(co_filename="<frozen importlib._bootstrap>"),
                               f_back=None)  # fmt: skip


def test_a_signal_inside_a_held_block_waits_for_its_end():
    seen = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: seen.append("handled"))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # give the interpreter every chance to run a handler
                pass
            seen.append("block done")
        assert seen == ["block done", "handled"]
        assert signal.getsignal(signal.SIGINT) is not None
    finally:
        signal.signal(signal.SIGINT, old)


def test_ctrl_c_inside_a_held_block_raises_after_it():
    done = []
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append(True)
        assert done == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)


def _send(sig):
    os.kill(os.getpid(), sig)
    for _ in range(1000):  # give the interpreter every chance to run a handler
        pass


@pytest.fixture
def raising_handlers():
    """Every stop signal raises KeyboardInterrupt, as Python's SIGINT does; the test
    process's own handlers are back afterwards."""
    olds = {s: signal.signal(s, signal.default_int_handler) for s in STOP_SIGNALS}
    yield
    for s, h in olds.items():
        signal.signal(s, h)


def test_once_a_stop_is_done_a_later_signal_is_ignored_until_the_process_exits(
    raising_handlers,
):
    stop = StopSwitch()
    with stop.on_signals():
        _send(signal.SIGTERM)  # the first: asks for a stop
        assert stop.signal == signal.SIGTERM
        stop.done()  # the checkpoint is written
        _send(signal.SIGTERM)  # a second one now changes nothing
    assert stop.second is None
    for s in STOP_SIGNALS:  # not back to a handler that would kill or raise
        assert signal.getsignal(s) == signal.SIG_IGN
    _send(signal.SIGTERM)  # on the way out: ignored


def test_a_second_signal_stops_at_once_and_leaves_the_signals_ignored(raising_handlers):
    stop = StopSwitch()
    with pytest.raises(KeyboardInterrupt), stop.on_signals():
        _send(signal.SIGTERM)
        _send(signal.SIGTERM)
    assert stop.second == signal.SIGTERM
    assert all(signal.getsignal(s) == signal.SIG_IGN for s in STOP_SIGNALS)


def test_without_a_stop_the_handlers_before_are_back(raising_handlers):
    with StopSwitch().on_signals():
        pass
    assert all(signal.getsignal(s) is signal.default_int_handler for s in STOP_SIGNALS)


def test_a_second_request_inside_an_import_stops_once_the_import_is_done():
    """Raised inside an import, KeyboardInterrupt can break the module (matplotlib's C
    extension then fails with ImportError, a traceback): it comes a moment later."""
    import time

    stop = StopSwitch()
    with pytest.raises(KeyboardInterrupt), stop.on_signals([signal.SIGTERM]):
        stop.request(signal.SIGTERM)  # the first: a checkpoint, then a stop
        stop.request(signal.SIGTERM, IN_AN_IMPORT)  # the second, mid-import: not raised there
        assert stop.second is None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the import is over: it is sent again
            time.sleep(0.01)
    assert stop.second == signal.SIGTERM


def test_a_request_sent_again_after_the_block_changes_nothing():
    import time

    stop = StopSwitch()
    old = signal.getsignal(signal.SIGTERM)
    with stop.on_signals([signal.SIGTERM]):
        stop.request(signal.SIGTERM)
        stop.request(signal.SIGTERM, IN_AN_IMPORT)
    time.sleep(0.2)  # the re-send was cancelled with the block: SIGTERM's default would kill
    assert signal.getsignal(signal.SIGTERM) == old and stop.second is None


def test_a_first_request_in_an_abandonable_block_raises_there_or_after_an_import():
    import time

    from toygpt_cli.stopping import StepAbandoned

    told = []
    stop = StopSwitch(on_first=told.append)
    with pytest.raises(StepAbandoned), stop.on_signals([signal.SIGTERM]), stop.abandonable():
        stop.request(signal.SIGTERM)  # at once: the block changes nothing until it ends
    assert told == [signal.SIGTERM] and stop.second is None  # a first request: a checkpoint
    stop = StopSwitch()
    with pytest.raises(StepAbandoned), stop.on_signals([signal.SIGTERM]), stop.abandonable():
        stop.request(signal.SIGTERM, IN_AN_IMPORT)  # not inside the import
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the import is over: it is sent again
            time.sleep(0.01)
    assert stop.second is None and stop.signal == signal.SIGTERM
    stop = StopSwitch()
    with stop.on_signals([signal.SIGTERM]):
        with stop.abandonable():
            pass
        stop.request(signal.SIGTERM)  # after the block: the usual stop at the next safe point
    assert stop.signal == signal.SIGTERM


def test_a_request_sent_again_just_as_the_abandonable_block_ends_is_not_a_second(monkeypatch):
    """The first request came inside an import; its re-send is decided while the block
    runs but delivered just after it ends: still the first request (a checkpoint, a stop at
    the next safe point), not a second one (a stop without a checkpoint)."""
    import threading

    from toygpt_cli import stopping

    resends = []

    def send_again(signum, wanted):  # a timer that the test fires by hand
        resends.append(wanted)
        return threading.Timer(0, lambda: None)

    monkeypatch.setattr(stopping, "send_again", send_again)
    stop = StopSwitch()
    with stop.on_signals([signal.SIGTERM]):
        with stop.abandonable():
            stop.request(signal.SIGTERM, IN_AN_IMPORT)
            assert resends[0]()  # the timer decides to send it again ...
        try:
            stop.request(signal.SIGTERM)  # ... and it lands after the block
        except KeyboardInterrupt:
            pytest.fail("the re-sent first request was taken for a second one")
    assert stop.signal == signal.SIGTERM and stop.second is None
    stop = StopSwitch()
    with stop.on_signals([signal.SIGTERM]):
        with stop.abandonable():
            stop.request(signal.SIGTERM, IN_AN_IMPORT)
        assert not resends[1]()  # the block ended first: nothing is sent again
        with pytest.raises(KeyboardInterrupt):
            stop.request(signal.SIGTERM)  # a request after that is a second one
    assert stop.second == signal.SIGTERM
