import os
import signal

import pytest

from toygpt_cli.stopping import signals_held


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
