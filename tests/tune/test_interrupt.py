"""SIGINT and SIGTERM handled the same way by a sweep's driver, phase by phase (no Ray here:
the real sweeps are stopped in test_sweep_ray.py and test_gml_ray.py)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from lt_ray.tune.interrupt import TUNE_SIGINT_SWITCH, StopSignals, SweepInterrupted


@pytest.fixture(autouse=True)
def _restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)  # the handler runs in this (main) thread, right away
    signal.getsignal(signum)  # a bytecode boundary after the kill


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_before_the_trials_stops_at_once_with_its_exit_code(signum, code):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job of a shell
    with pytest.raises(SweepInterrupted) as caught, StopSignals() as stop:
        _send(signum)
    assert caught.value.exit_code == code and caught.value.signum == signum
    assert caught.value.total is None and stop.received == signum
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # what it was, back again


def test_handlers_and_tunes_switch_are_restored():
    os.environ.pop(TUNE_SIGINT_SWITCH, None)
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals():
        assert os.environ[TUNE_SIGINT_SWITCH] == "1"  # Tune leaves SIGINT to StopSignals
        assert signal.getsignal(signal.SIGTERM) is not before
    assert TUNE_SIGINT_SWITCH not in os.environ
    assert signal.getsignal(signal.SIGTERM) is before


def test_install_again_after_another_library_took_sigterm():
    with StopSignals() as stop:
        signal.signal(signal.SIGTERM, lambda *_: None)  # what ray.init does
        stop.install()
        with pytest.raises(SweepInterrupted):
            _send(signal.SIGTERM)


def test_while_tune_runs_the_first_signal_is_tunes_interrupt_and_a_second_stops_now():
    seen = []
    with StopSignals() as stop, stop.tune_running():
        signal.signal(signal.SIGUSR1, lambda signum, _: seen.append(signum))  # Tune's run
        _send(signal.SIGTERM)
        assert seen == [signal.SIGTERM] and stop.received == signal.SIGTERM
        with pytest.raises(SweepInterrupted) as caught:
            _send(signal.SIGINT)
    assert caught.value.signum == signal.SIGTERM  # the first signal names the stop


def test_before_tune_installs_its_handler_the_signal_stops_at_once():
    with StopSignals() as stop, stop.tune_running(), pytest.raises(SweepInterrupted):
        _send(signal.SIGINT)  # SIGUSR1 is still what it was: Tune's run has not started


def test_during_the_export_a_signal_is_only_recorded():
    with StopSignals() as stop:
        with stop.deferred():
            _send(signal.SIGINT)
            exported = True
        assert exported and stop.received == signal.SIGINT


def test_outside_the_main_thread_nothing_changes():
    before = signal.getsignal(signal.SIGTERM)
    errors = []

    def body() -> None:
        try:
            with StopSignals() as stop:
                stop.install()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert errors == [] and signal.getsignal(signal.SIGTERM) is before
