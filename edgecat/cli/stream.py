"""`edgecat stream`: parse options, run :func:`edgecat.stream.run_stream`, print the summary."""

from __future__ import annotations

import click

from edgecat.cli.common import command, console, precision_option, print_json
from edgecat.cli.signing import trusted_key_option


@command(examples=[
    "edgecat stream runs/cats --source 0 --sink display://",
    "edgecat stream runs/cats --source rtsp://cam/stream --sink http://:8080 --sink jsonl://events.jsonl",
    "edgecat stream runs/cats --source clip.mp4 --duration 10 --sink out.mp4 --json > summary.json",
    "edgecat stream /opt/edgecat/current --source 0 --sink mqtt://device@broker.lan/edgecat/door "
    "--metrics :9100 --watch --trusted-key /etc/edgecat/trusted.pub",
])
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--source", "sources", multiple=True, required=True,
              help="0 or /dev/video0, csi://0, rtsp://..., gst:PIPELINE, a video file or an image folder. "
                   "Repeat for several sources (batched into one inference call).")
@click.option("--sink", "sinks", multiple=True,
              help="display://, out.mp4, http://:8080 (this machine only; http://0.0.0.0:8080 for the network, "
                   "with an access token), jsonl://events.jsonl, mqtt://[user@]broker[:port]/topic/prefix "
                   "(mqtts:// for TLS; password from $EDGECAT_MQTT_PASSWORD or --credentials). Repeatable. "
                   "Default: display://.")
@click.option("--backend", default=None,
              help="Runtime (default: auto, the fastest measured on this machine, when the bundle has exports, else keras).")
@precision_option()
@click.option("--threads", type=int, default=None,
              help="CPU threads for the model (default: what auto measured fastest, else the physical "
                   "cores this process may use).")
@click.option("--threshold", type=float, default=None,
              help="Decision threshold (binary; default: the bundle's) or minimum probability (N classes).")
@click.option("--smooth", type=int, default=1, show_default=True, help="Average probabilities over N frames.")
@click.option("--max-fps", type=float, default=None, help="Process at most this many frames per second.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--loop", is_flag=True, help="Replay video files and image folders forever.")
@click.option("--realtime", is_flag=True,
              help="Play files at their native frame rate like a live camera (dropping frames when slow).")
@click.option("--reconnect", "reconnect_seconds", type=float, default=30.0, show_default=True,
              help="Seconds to keep reconnecting a lost live source (0: end at once).")
@click.option("--jsonl-changes", is_flag=True, help="JSONL sinks log only label changes.")
@click.option("--width", type=int, default=None, help="Camera capture width (V4L2, CSI).")
@click.option("--height", type=int, default=None, help="Camera capture height (V4L2, CSI).")
@click.option("--camera-fps", type=float, default=None, help="Camera frame rate (V4L2, CSI).")
@click.option("--flip", type=click.IntRange(0, 7), default=0, show_default=True,
              help="CSI flip-method (0 none, 2 rotate 180, 4 horizontal, 6 vertical).")
@click.option("--credentials", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="netrc-format file (mode 0600) with camera and MQTT broker users and passwords, instead of "
                   "putting them in the URI; also $EDGECAT_CREDENTIALS, or $EDGECAT_RTSP_USER/$EDGECAT_RTSP_PASSWORD.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Video files / image folders: up to N already-decoded frames per source in one model call "
                   "(at 1, --pipeline auto may time and choose 2 on a long video file).")
@click.option("--pipeline", type=click.Choice(["auto", "serial", "overlap"]), default="auto", show_default=True,
              help="serial: one thread decodes, infers and writes (a video file when the model's threads fill "
                   "the cores); overlap: capture and output threads around the model. auto picks by cores, "
                   "model threads and source, and times the candidates on a long video file.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the summary as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@trusted_key_option()
@click.option("--watch", is_flag=True,
              help="Swap in a new bundle placed at BUNDLE's path without dropping a frame (checked first; a bad "
                   "one is refused and the running model goes on). SIGHUP does it at any time.")
@click.option("--metrics", "metrics", default=None, metavar="[HOST]:PORT",
              help="Serve Prometheus metrics at /metrics (:9100 this machine only; 0.0.0.0:9100 needs "
                   "$EDGECAT_HTTP_TOKEN). The live view (--sink http://...) serves /metrics too.")
def stream(bundle: str, sources: tuple[str, ...], sinks: tuple[str, ...], backend: str | None, precision: str | None,
           threads: int | None, threshold: float | None, smooth: int, max_fps: float | None,
           duration: float | None, loop: bool, realtime: bool, reconnect_seconds: float, jsonl_changes: bool,
           width: int | None, height: int | None, camera_fps: float | None, flip: int, credentials: str | None,
           summary_json: str | None, as_json: bool, batch: int = 1, trusted_keys: tuple[str, ...] = (),
           watch: bool = False, metrics: str | None = None, pipeline: str = "auto") -> None:
    """Classify live frames from cameras, streams, videos or image folders with BUNDLE.

    Ctrl-C or SIGTERM ends cleanly: sinks are flushed and a summary is printed.
    """
    from edgecat.fsutil import write_json
    from edgecat.stream import CameraOptions, StreamConfig, run_stream

    cfg = StreamConfig(
        sources=list(sources), sinks=list(sinks) or ["display://"], backend=backend, precision=precision,
        runtime_options={"threads": threads} if threads else {}, threshold=threshold, smooth=smooth,
        max_fps=max_fps, duration=duration, loop=loop, realtime=realtime, reconnect_seconds=reconnect_seconds,
        jsonl_changes=jsonl_changes, camera=CameraOptions(width, height, camera_fps, flip), credentials=credentials,
        batch=batch, trusted_keys=list(trusted_keys), watch=watch, metrics=metrics, pipeline=pipeline,
    )
    summary = run_stream(bundle, cfg)
    if summary_json:
        write_json(summary_json, summary.as_dict())
    if as_json:
        print_json(summary.as_dict())
        return
    console.print(f"[bold]stream summary[/]: {summary.line()}")
    for src in summary.sources:
        console.print(f"  {src['uri']}: read {src['read']}, dropped {src['dropped']}, "
                      f"reconnects {src['reconnects']}, ended: {src['ended']}")
    if summary.labels:
        console.print("  labels: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.labels.items())))


COMMANDS: list[click.Command] = [stream]
