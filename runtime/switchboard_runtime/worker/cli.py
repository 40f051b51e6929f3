"""`switchboard-worker`: serve the call worker (installed with `switchboard-runtime[worker]`).

    SWITCHBOARD_SERVICE_TOKEN=... SWITCHBOARD_CONTROL_PLANE_URL=https://switchboard.example.com \
    SWITCHBOARD_WORKER_PUBLIC_URL=https://worker.example.com switchboard-worker --port 8001

Webhooks, health and metrics on --port; the call sockets (media streams, browser test calls)
on the media plane's --media-port (8002).
"""

import argparse
import os
import sys

from switchboard_runtime.logging import configure_logging
from switchboard_runtime.worker.app import WorkerConfigError, create_worker_app
from switchboard_runtime.worker.serving import serve
from switchboard_runtime.worker.settings import SettingsError, WorkerSettings, load_settings

FACTORY = "switchboard_runtime.worker:create_worker_app"


MEDIA_PORT = "SWITCHBOARD_WORKER_MEDIA_PORT"
MEDIA_HOST = "SWITCHBOARD_WORKER_MEDIA_HOST"


def run(host: str, port: int, server: str, media_port: str | None = None) -> int:
    """Serve until stopped; 2 (with the reason on stderr) when a setting is missing or invalid.

    `media_port`: where the media plane listens ("off": the HTTP server carries the call
    sockets); None keeps SWITCHBOARD_WORKER_MEDIA_PORT, or 8002 when that is unset."""
    if media_port == "off":
        os.environ.pop(MEDIA_PORT, None)
    elif media_port is not None:
        os.environ[MEDIA_PORT] = media_port
    else:
        os.environ.setdefault(MEDIA_PORT, "8002")
    os.environ.setdefault(MEDIA_HOST, host)  # the app reads its settings again under the server
    try:
        settings = load_settings(WorkerSettings)
    except SettingsError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        create_worker_app(settings)  # refuse here, with its message, before the server starts
    except WorkerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(FACTORY, host=host, port=port, server="granian" if server == "granian" else "uvicorn")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="switchboard-worker",
        description="The call worker: /twiml and /texml answers, /ws/twilio and /ws/telnyx "
        "media streams, bridged to xAI's realtime API. Settings come from SWITCHBOARD_* "
        "environment variables (SERVICE_TOKEN, CONTROL_PLANE_URL, WORKER_PUBLIC_URL, ...).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument(
        "--media-port",
        help="the media plane's port: phone streams and browser test calls (default: "
        "SWITCHBOARD_WORKER_MEDIA_PORT, else 8002; 0: a free port; off: on the HTTP port)",
    )
    args = parser.parse_args(argv)
    sys.exit(run(args.host, args.port, args.server, args.media_port))


if __name__ == "__main__":
    main()
