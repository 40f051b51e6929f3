"""The call worker (`switchboard-runtime[worker]`): a FastAPI app phone numbers point at."""

from switchboard_runtime.worker.app import EngineHandler, WorkerConfigError, create_worker_app
from switchboard_runtime.worker.settings import WorkerSettings

__all__ = ["EngineHandler", "WorkerConfigError", "WorkerSettings", "create_worker_app"]
