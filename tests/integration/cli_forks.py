"""`switchboard` commands in fresh processes without paying the import for each one.

Run as a script, this process imports `control_plane.cli` — exactly what the `switchboard`
console script imports — and nothing else of the project, then forks one child per command. Every
command therefore starts from an interpreter that has loaded the same modules the real command
loads and has run no command before it: an import-order bug (a table whose metadata only some
other command loads) still shows, and no state leaks from one command to the next. What it saves
is ~3 s of imports per command. The console script itself is still run by the tests.

Protocol on stdin/stdout, one JSON object per line:
  request  {"args": [...], "env": {...}}
  answer   {"returncode": int, "stdout": str, "stderr": str}
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path


class CommandForks:
    """The test side: start the fork server once, then run commands through it."""

    def __init__(self) -> None:
        # -P: the script's folder is not put on sys.path, as it is not for the console script.
        self._server = subprocess.Popen(
            [sys.executable, "-P", __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        assert self._server.stdin and self._server.stdout
        self._server.stdin.write(json.dumps({"args": args, "env": env}) + "\n")
        self._server.stdin.flush()
        line = self._server.stdout.readline()
        assert line, f"the fork server exited ({self._server.poll()})"
        answer = json.loads(line)
        return subprocess.CompletedProcess(
            ["switchboard", *args], answer["returncode"], answer["stdout"], answer["stderr"]
        )

    def close(self) -> None:
        assert self._server.stdin
        self._server.stdin.close()
        self._server.wait(timeout=30)


def _run_child(args: list[str], env: dict[str, str], out: Path, err: Path) -> None:
    """In the forked child: the command's environment and standard streams, then the command.
    Standard input is /dev/null: the server's own stdin carries the requests."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path, flags in (
        (0, Path(os.devnull), os.O_RDONLY),
        (1, out, os.O_WRONLY),
        (2, err, os.O_WRONLY),
    ):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    code = 0
    try:
        from control_plane.cli import app

        app(args=args, prog_name="switchboard")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import control_plane.cli  # noqa: F401 - the one import the console script makes

    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory() as scratch:
            out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
            out.touch()
            err.touch()
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _run_child(request["args"], request["env"], out, err)
            _, status = os.waitpid(pid, 0)
            answer = {
                "returncode": os.waitstatus_to_exitcode(status),
                "stdout": out.read_text(),
                "stderr": err.read_text(),
            }
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
