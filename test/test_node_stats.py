"""Diagnostics bookkeeping without ROS: windowed rates, loss shares, bad headers, stage times."""
import numpy as np
from toy_data import write_meta_model

import fixtures
from metafusion_ros.runtime.engine import EngineConfig, FusionEngine
from metafusion_ros.runtime.stats import problems, STAGES, Stats


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now


def test_rate_covers_the_window_not_the_last_frames_however_old():
    """100 frames long ago, then 19 in the last 10 s at 1.9 Hz: the rate is 1.9 Hz."""
    clock = FakeClock()
    stats = Stats(window_s=10.0, clock=clock)
    for _ in range(100):
        stats.event('received')
        stats.frame_done(5.0, 0)
        clock.now += 0.01
    clock.now += 120.0  # a pause
    for _ in range(19):
        clock.now += 1 / 1.9
        stats.event('received')
        stats.frame_done(5.0, 0)
    values = stats.snapshot()
    assert values['processed_window'] == 19 and values['frames_processed'] == 119
    assert values['frame_rate_hz'] == 1.9 and values['window_s'] == 10.0
    clock.now += 11.0
    assert stats.snapshot()['frame_rate_hz'] == 0.0


def test_rate_during_the_first_seconds_uses_the_uptime():
    """Two frames in the first second of a 10 s window: 2 Hz, not 0.2 Hz."""
    clock = FakeClock()
    stats = Stats(window_s=10.0, clock=clock)
    clock.now += 0.5
    stats.frame_done(5.0, 0)
    clock.now += 0.5
    stats.frame_done(5.0, 0)
    assert stats.snapshot()['frame_rate_hz'] == 2.0


def test_drops_and_losses_above_ten_percent_warn_only_while_in_the_window():
    """482 of 540 frames dropped is a problem; once the window has passed it is not."""
    clock = FakeClock()
    stats = Stats(window_s=10.0, clock=clock)
    stats.event('received', 540)
    stats.event('dropped', 480)
    stats.event('lost', 2)
    stats.frame_done(5.0, 0)
    values = stats.snapshot()
    assert values['dropped_or_lost_pct'] == round(100 * 482 / 542, 1)
    found = problems(values)
    assert len(found) == 1 and '480 dropped, 2 lost' in found[0]
    clock.now += 10.5
    stats.event('received', 100)
    stats.event('dropped', 10)  # exactly 10 %: not above the threshold
    assert problems(stats.snapshot()) == []


def test_bad_headers_and_skips_in_the_window_are_problems():
    """Stamp 0, an empty frame_id and skipped frames are each named with their count."""
    stats = Stats(window_s=10.0, clock=FakeClock())
    stats.event('received', 3)
    stats.event('stamp_zero', 2)
    stats.event('frame_id_empty')
    stats.event('skipped')
    found = ' | '.join(problems(stats.snapshot()))
    assert '2 frames stamped 0' in found and '1 frames with an empty frame_id' in found
    assert '1 frames skipped' in found


def test_silence_is_measured_from_the_last_frame():
    """silent_for counts from start-up, then from the newest received frame."""
    clock = FakeClock()
    stats = Stats(clock=clock)
    clock.now += 4.0
    assert stats.silent_for() == 4.0
    stats.event('received')
    clock.now += 1.5
    assert stats.silent_for() == 1.5


def test_stage_times_are_reported_per_stage():
    """Median and maximum per stage over the window's frames."""
    stats = Stats(clock=FakeClock())
    for ms in (1.0, 2.0, 9.0):
        stats.frame_done(ms, 0, {'network': ms, 'publish': 0.5})
    values = stats.snapshot()
    assert values['stage_ms_network_p50'] == 2.0 and values['stage_ms_network_max'] == 9.0
    assert values['stage_ms_publish_p50'] == 0.5 and 'stage_ms_rules_p50' not in values


def test_engine_times_every_stage_of_a_frame(tmp_path):
    """The engine reports preprocessing, the network and each core stage (rules ... fusion)."""
    priors = fixtures.write_priors(tmp_path / 'priors.npz')
    config = EngineConfig(model_path=str(fixtures.write_model(tmp_path / 'model.onnx')),
                          priors_path=str(priors),
                          meta_model_path=str(write_meta_model(tmp_path / 'meta.json', priors)))
    processed = FusionEngine.load(config).process(fixtures.scene())
    assert processed.result.candidates.count == 2
    timed = [stage for stage in STAGES if stage in processed.stages_ms]
    assert timed == ['preprocess', 'network', 'rules', 'segments', 'features', 'classifier',
                     'fusion']
    assert all(np.isfinite(v) and v >= 0 for v in processed.stages_ms.values())


def test_input_log_counts_every_event_and_warns_once_per_throttle_period():
    """Three zero stamps in a row: three counted, one warning until the period has passed."""
    from types import SimpleNamespace

    from metafusion_ros.runtime.stats import InputLog

    clock = FakeClock()
    stats, warnings = Stats(clock=clock), []
    log = InputLog(stats, warnings.append, lambda: 5.0, clock)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id='cam')
    for _ in range(3):
        log.check_header(header)
    assert stats.counts['stamps_zero'] == 3 and stats.counts['stamps_non_monotonic'] == 2
    assert len(warnings) == 2 and 'stamp is 0' in warnings[0]  # one per kind
    clock.now += 5.0
    log.check_header(header)
    assert len(warnings) == 4 and '4 so far' in warnings[2]
