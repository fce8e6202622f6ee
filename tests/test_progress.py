"""The text progress bar: time left, and lines printed between its redraws."""
import io
import types

from skulmfit.progress import ProgressBar, SilentProgress


def test_bar_counts_steps_and_estimates_the_time_left(monkeypatch):
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr("skulmfit.progress.time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    screen = io.StringIO()
    bar = ProgressBar(stream=screen, min_interval=0.0)
    bar.start("fine-tuning", total_steps=4)
    for loss in (2.0, 1.0):  # 10 s a step
        clock.now += 10.0
        bar.step(loss)
    assert screen.getvalue().endswith("2/4 loss 1.9000  00:20 elapsed, 00:20 left")  # 10 s a step, 2 to go
    bar.end(perplexity=7.0)
    assert screen.getvalue().endswith("perplexity 7\n")


def test_a_line_written_between_redraws_clears_the_bar_and_goes_to_stdout(capsys):
    screen = io.StringIO()
    bar = ProgressBar(stream=screen)
    bar.start("pretraining", total_steps=10)
    bar.write('{"tokens_seen": 100}')
    assert capsys.readouterr().out == '{"tokens_seen": 100}\n'
    drawn = screen.getvalue()
    assert "\r\033[K" in drawn and drawn.rstrip().endswith("left")  # the bar comes back below the line
    SilentProgress().write("checkpoint")
    assert capsys.readouterr().out == "checkpoint\n"
