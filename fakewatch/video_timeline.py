"""The timeline summary `fakewatch check` prints under a video's verdict: its length, how many frames were scored,
a sparkline of their scores and the stretches the model called fake or uncertain, so a moderator reading a terminal
sees where in the clip to look."""

from __future__ import annotations

from typing import Any

BARS = "▁▂▃▄▅▆▇█"
MAX_MARKS = 64


def sparkline(scores: list[float]) -> str:
    """One mark per frame, its height the frame's P(fake)."""
    return "".join(BARS[min(len(BARS) - 1, int(score * len(BARS)))] for score in scores[:MAX_MARKS])


def stretches(frames: list[dict[str, Any]], verdict: str) -> list[str]:
    """Runs of consecutive frames with this verdict, as "3.0-7.0 s" (a single frame as "3.0 s")."""
    runs: list[list[float]] = []
    previous_matched = False
    for frame in frames:
        matched = frame["verdict"] == verdict
        if matched and previous_matched:
            runs[-1].append(frame["time_s"])
        elif matched:
            runs.append([frame["time_s"]])
        previous_matched = matched
    return [f"{run[0]:.1f} s" if len(run) == 1 else f"{run[0]:.1f}-{run[-1]:.1f} s" for run in runs]


def describe_timeline(result: dict[str, Any]) -> str:
    """The lines under a video check's verdict line; empty for a still."""
    frames = result.get("frames") or []
    if result.get("media") != "video" or not frames:
        return ""
    duration = result.get("duration_s")
    length = f"{duration:.1f} s" if duration is not None else "unknown length"
    lines = [f"  video, {length}: {len(frames)} frames scored; the clip's score is the mean of the top quarter",
             f"  timeline 0 s |{sparkline([frame['score'] for frame in frames])}| {length}"]
    for verdict in ("fake", "uncertain"):
        found = stretches(frames, verdict)
        if found:
            lines.append(f"  {verdict} frames at {', '.join(found)}")
    if len(lines) == 2:
        lines.append("  every frame reads real")
    return "\n" + "\n".join(lines)
