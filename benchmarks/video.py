"""Benchmark video checks and print JSON: the clip rule against the middle frame alone on the DFDC face-swap clips,
real clips flagged, seconds per clip, and a 60-second 720p clip sampled, scored and stored.

The 100 test clips of ``faces-faceswap-clips`` (112 px MJPEG, 4.9 s each) are re-encoded to H.264 (MP4) and VP9
(WebM) here, as web video would be, then each goes through core/video.py's sampling and the shipped detector.
Candidate clip rules are computed on the same frame scores, so their AUCs compare within one run; the rule in
core/policy.py (``clip_score``) is reported as ``rule``.

    python benchmarks/video.py [--model models/shipped/default.keras] [--data ../shared/data]
                               [--limit 100] [--threads 2] [--out benchmarks/video-results.json]
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.model_metadata import SHIPPED_MODEL
from core.policy import clip_score, decide_verdict
from core.video import Sampling, VideoLimits, iter_frames, sample_video
from models.cli import configure_tensorflow
from models.serving import Detector
from testbed.report import emit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = "faces-faceswap-clips"
CODECS = {"h264": ("mp4", "libx264", {"preset": "veryfast", "crf": "23"}),
          "vp9": ("webm", "libvpx-vp9", {"deadline": "good", "cpu-used": "5", "crf": "32", "b": "0"})}
RULES: dict[str, Callable[[Sequence[float]], float]] = {
    "rule (mean of the top quarter)": clip_score,
    "mean of all frames": lambda scores: float(np.mean(scores)),
    "median": lambda scores: float(np.median(scores)),
    "mean of the top half": lambda scores: clip_score(scores, top_share=0.5),
    "max": lambda scores: float(max(scores)),
}
LONG_CLIP_S, LONG_CLIP_FPS = 60, 30


def reencode(data: bytes, codec: str) -> bytes:
    """The clip decoded and encoded again with one of CODECS, at its own size and frame rate."""
    container_format, encoder, options = CODECS[codec]
    out = io.BytesIO()
    with av.open(io.BytesIO(data), "r") as source, av.open(out, "w", format=container_format) as target:
        stream_in = source.streams.video[0]
        stream = target.add_stream(encoder, rate=stream_in.average_rate or 25, options=options)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        for frame in source.decode(stream_in):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                target.mux(packet)
        for packet in stream.encode():
            target.mux(packet)
    return out.getvalue()


def middle_frame(data: bytes) -> Any:
    frames = [frame.rgb(10_000)[0] for frame in iter_frames(data, VideoLimits())]
    return frames[len(frames) // 2]


def score_clips(paths: list[Path], detector: Detector, codec: str) -> dict[str, Any]:
    labels: list[int] = []
    middles: list[float] = []
    seconds: list[float] = []
    frame_counts: list[int] = []
    rule_scores: dict[str, list[float]] = {name: [] for name in RULES}
    real_verdicts: list[str] = []
    for path in tqdm(paths, desc=f"clips ({codec})", file=sys.stderr):
        data = reencode(path.read_bytes(), codec)
        started = time.perf_counter()
        video = sample_video(data, VideoLimits(), Sampling())
        frame_scores = detector.score([frame.image for frame in video.frames])
        seconds.append(time.perf_counter() - started)
        frame_counts.append(len(frame_scores))
        labels.append(1 if path.parent.name == "fake" else 0)
        for name, rule in RULES.items():
            rule_scores[name].append(rule(frame_scores))
        middles.append(detector.score([middle_frame(data)])[0])
        if labels[-1] == 0:
            real_verdicts.append(decide_verdict(clip_score(frame_scores), detector.threshold, detector.band).value)
    return {
        "clips": len(paths), "real": labels.count(0), "fake": labels.count(1),
        "auc": {name: round(float(roc_auc_score(labels, scores)), 4) for name, scores in rule_scores.items()},
        "auc_middle_frame_alone": round(float(roc_auc_score(labels, middles)), 4),
        "real_clips_flagged": round(sum(v != "real" for v in real_verdicts) / max(1, len(real_verdicts)), 4),
        "real_clips_called_fake": round(sum(v == "fake" for v in real_verdicts) / max(1, len(real_verdicts)), 4),
        "fake_clips_flagged": round(sum(decide_verdict(s, detector.threshold, detector.band).value != "real"
                                        for s, y in zip(rule_scores[next(iter(RULES))], labels, strict=True) if y)
                                    / max(1, labels.count(1)), 4),
        "frames_per_clip": statistics.mean(frame_counts),
        "seconds_per_clip": round(statistics.mean(seconds), 4),
    }


def long_clip() -> bytes:
    """60 s of 720p H.264 at 30 fps: a pan over a photo, cutting to another every 15 s."""
    import skimage.data
    from PIL import Image

    photos = [np.asarray(Image.fromarray(photo).convert("RGB").resize((1280 + 256, 720)))
              for photo in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
                            skimage.data.rocket())]
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=LONG_CLIP_FPS, options={"preset": "ultrafast"})
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        total = LONG_CLIP_S * LONG_CLIP_FPS
        for index in tqdm(range(total), desc="making the 60 s 720p clip", file=sys.stderr):
            photo = photos[index * len(photos) // total]
            pixels = np.ascontiguousarray(photo[:, index % 256 : index % 256 + 1280])
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def time_long_clip(model: Path) -> dict[str, Any]:
    """The 60 s clip through the real intake and worker code on an embedded database: stored, sampled, scored."""
    from backend.checks.service import get_check, submit_image
    from backend.settings import Settings
    from backend.storage.db import session_scope
    from backend.storage.migrate import upgrade_database
    from backend.training.versions import register_model
    from worker.detectors import detector_for
    from worker.scoring import score_checks

    data = long_clip()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder), _env_file=None)  # type: ignore[call-arg]
        upgrade_database(settings.database)
        with session_scope(settings) as session:
            detector_for(register_model(session, model, activate=True), settings)  # loaded and warm before the clock starts
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")  # the worker's progress
        started = time.perf_counter()
        with session_scope(settings) as session:
            check_id = submit_image(session, data, settings).check.id
            session.commit()
        stored = time.perf_counter() - started
        score_checks([check_id], settings)
        total = time.perf_counter() - started
        with session_scope(settings) as session:
            check = get_check(session, check_id)
            frames, status = len(check.frames or []), check.status.value
    return {"bytes": len(data), "duration_s": LONG_CLIP_S, "size": "1280x720", "fps": LONG_CLIP_FPS,
            "status": status, "frames_scored": frames, "seconds_to_store": round(stored, 2),
            "seconds_sampled_scored_stored": round(total, 2), "within_10_s": total <= 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=100, help="clips to use (spread over both classes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    configure_tensorflow(args.threads)
    detector = Detector.load(args.model)
    detector.warm()
    clips = sorted((args.data / CLIPS / "test").glob("*/*.mp4"))
    paths = clips[:: max(1, len(clips) // args.limit)][: args.limit]
    result = {"model": detector.version, "threshold": detector.threshold, "band": detector.band,
              "sampling": {"every_s": Sampling().every_s, "max_frames": Sampling().max_frames},
              "codecs": {codec: score_clips(paths, detector, codec) for codec in CODECS},
              "long_clip": time_long_clip(args.model)}
    emit(result, args.out)


if __name__ == "__main__":
    main()
