"""The `fakewatch` command as a user meets it: help, keys, the database, `up` on a fresh data dir, `check` (one file,
and a folder in upload batches)."""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from backend.settings import Settings
from fakewatch.api_client import ApiClient, ClientError
from fakewatch.cli import cli
from fakewatch.client_commands import draw, scan_bar
from testbed.images import distinct_photos, photo_bytes
from testbed.stack import Stack, free_port, wait_for_url

ROOT = Path(__file__).resolve().parent.parent


def all_commands() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(group: object, prefix: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            paths.append(prefix + [name])
            walk(command, prefix + [name])

    walk(cli, [])
    return paths


def test_help_explains_every_command() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("up", "api", "worker", "db", "keys", "check", "train", "evaluate", "score"):
        assert name in result.output
    for path in all_commands():
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert len(result.output.splitlines()) >= 3, f"`fakewatch {' '.join(path)} --help` should explain itself"


def run(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakewatch.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def test_keys_lifecycle(tmp_path: Path) -> None:
    env = {"FAKEWATCH_DATA_DIR": str(tmp_path / "var")}
    assert run(["db", "upgrade"], env).returncode == 0
    created = run(["keys", "create", "ci-bot"], env)
    assert created.returncode == 0
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("fw_") and len(key) > 40
    listed = run(["keys", "list"], env).stdout
    assert "ci-bot" in listed and key not in listed, "keys are listed by prefix, never in full"
    assert "ci-bot\tsubmitter\t" in listed, "new keys are submitters unless --role says otherwise"
    admin = run(["keys", "create", "ops", "--role", "admin"], env)
    assert admin.returncode == 0 and admin.stdout.strip().splitlines()[-1].startswith("fw_")
    assert "ops\tadmin\t" in run(["keys", "list"], env).stdout
    assert run(["keys", "revoke", "ci-bot"], env).returncode == 0
    assert "revoked" in run(["keys", "list"], env).stdout
    missing = run(["keys", "revoke", "nobody"], env)
    assert missing.returncode != 0 and "keys list" in missing.stderr


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            return line.rstrip("\n")
        time.sleep(0.05)
    raise TimeoutError("fakewatch up printed nothing")


def test_up_runs_everything_on_a_fresh_data_dir(tmp_path: Path) -> None:
    """The first-run experience: `fakewatch up` prints its addresses and key, becomes ready, scores a check
    submitted with `fakewatch check`, and stops cleanly on Ctrl-C."""
    api_port, admin_port = free_port(), free_port()
    env = {"FAKEWATCH_DATA_DIR": str(tmp_path / "var"), "FAKEWATCH_API_PORT": str(api_port),
           "FAKEWATCH_ADMIN_PORT": str(admin_port), "PYTHONUNBUFFERED": "1"}
    for name in ("FAKEWATCH_DATABASE_URL", "FAKEWATCH_BROKER_URL"):
        env[name] = ""
    process = subprocess.Popen([sys.executable, "-m", "fakewatch.cli", "up"], env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = [_read_line(process, 60) for _ in range(2)]
        assert lines[0] == f"API: http://127.0.0.1:{api_port}"
        if lines[1].startswith("Admin: "):
            assert lines[1] == f"Admin: http://127.0.0.1:{admin_port}"
            lines.append(_read_line(process, 60))
        key_line = lines[-1]
        assert key_line.startswith("API key: fw_")
        key = key_line.removeprefix("API key: ")
        assert "first key (fakewatch up)\tadmin\t" in run(["keys", "list"], env).stdout, "the first key is an admin's"
        wait_for_url(f"http://127.0.0.1:{api_port}/readyz", process, (tmp_path / "var/logs/worker.log").read_text,
                     timeout=180)
        photo = tmp_path / "astronaut.jpg"
        photo.write_bytes(photo_bytes("astronaut"))
        checked = run(["check", "--jsonl", str(photo)],
                      {**env, "FAKEWATCH_API_URL": f"http://127.0.0.1:{api_port}", "FAKEWATCH_API_KEY": key})
        assert checked.returncode == 0, checked.stderr
        result = json.loads(checked.stdout.strip().splitlines()[-1])
        assert result["status"] == "done" and result["verdict"] in ("real", "fake", "uncertain")
        assert (tmp_path / "var/logs/api.log").exists() and (tmp_path / "var/logs/worker.log").exists()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{api_port}/healthz", timeout=2)
    # A second run keeps the existing key: no new key is printed.
    second = subprocess.Popen([sys.executable, "-m", "fakewatch.cli", "up"], env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        first_lines = [_read_line(second, 60) for _ in range(2)]
        assert not any(line.startswith("API key:") for line in first_lines)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=60)


def test_compose_file_names_commands_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "redis", "migrate", "api", "worker", "admin"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    runner = CliRunner()
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] != "fakewatch":
            continue
        args = command[1:]
        options_at = next((i for i, arg in enumerate(args) if arg.startswith("-")), len(args))
        result = runner.invoke(cli, [*args[:options_at], "--help"])
        assert result.exit_code == 0, f"service {name}: `{' '.join(command)}` is not a fakewatch command"
        for option in (arg for arg in args[options_at:] if arg.startswith("--")):
            assert option in result.output, f"service {name}: {option} is not an option of {args[:options_at]}"
    gunicorn = services["api"]["command"]
    assert gunicorn[0] == "gunicorn" and gunicorn[-1] == "backend.wsgi:app"
    assert importlib.import_module("backend.wsgi").app is not None
    assert (ROOT / "Dockerfile").is_file()


def test_every_setting_is_documented_in_env_example() -> None:
    documented = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    missing = [name for name in Settings.model_fields if f"FAKEWATCH_{name.upper()}=" not in documented]
    assert missing == [], f".env.example lacks {missing}"


def test_client_polls_survive_a_kept_alive_connection_the_server_closed() -> None:
    """The first GET on a connection the server drops without answering (an idle keep-alive it just closed) is
    sent again, so `retrain --wait` and `scan --wait` do not die on a race they cannot see."""
    listener = socket.create_server(("127.0.0.1", 0))
    answered: list[bytes] = []

    def serve() -> None:
        for attempt in range(2):
            connection, _ = listener.accept()
            with connection:
                request = connection.recv(65536)
                if attempt == 0:
                    continue  # closed without a response
                answered.append(request.split(b"\r\n", 1)[0])
                body = b'{"status": "done"}'
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                   + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = ApiClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "fw_test", timeout_s=10)
    assert client.get_json("/api/v1/training-runs/x") == {"status": "done"}
    assert answered == [b"GET /api/v1/training-runs/x HTTP/1.1"]
    server.join(timeout=10)
    listener.close()


def test_a_post_with_an_idempotency_key_is_sent_again_with_the_same_key() -> None:
    """A check upload whose connection drops after the server read it is sent again, carrying the same
    Idempotency-Key (so the server answers the first check instead of creating a second); a POST the server does
    not deduplicate is not sent again once it reached the server."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        for attempt in range(3):
            connection, _ = listener.accept()
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(65536)
                seen.append(request)
                if attempt != 1:
                    continue  # read, then dropped without an answer
                body = b'{"id": "c1", "status": "done"}'
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                   + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = ApiClient(f"http://127.0.0.1:{listener.getsockname()[1]}", "fw_test", timeout_s=10)
    assert client.request("POST", "/api/v1/checks", json={"url": "https://example.org/x.jpg"}).json()["id"] == "c1"
    keys = [line for request in seen for line in request.split(b"\r\n") if line.lower().startswith(b"idempotency-key")]
    assert len(seen) == 2 and len(keys) == 2 and keys[0] == keys[1]
    with pytest.raises(ClientError) as dropped:
        client.request("POST", "/api/v1/training-runs", json={})
    assert dropped.value.code == "unreachable" and len(seen) == 3, "sent once: the server has no key to dedupe on"
    server.join(timeout=10)
    listener.close()


def test_children_of_up_end_when_it_is_killed(tmp_path: Path) -> None:
    """`fakewatch up` SIGKILLed (no handler runs): the API it started, in a session of its own, stops anyway."""
    port = free_port()
    env = {**os.environ, "FAKEWATCH_DATA_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1"}
    (tmp_path / "logs").mkdir()
    supervisor = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from fakewatch.supervision import spawn; "
         f"child = spawn('api', ['api', '--port', '{port}'], Path(sys.argv[1])); print(child.pid); time.sleep(600)",
         str(tmp_path / "logs")], env=env, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        child = int(_read_line(supervisor, 60))
        wait_for_url(f"http://127.0.0.1:{port}/healthz", supervisor, (tmp_path / "logs/api.log").read_text)
        supervisor.kill()
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and _running(child):
            time.sleep(0.2)
        assert not _running(child), "the API outlived the `fakewatch up` that started it"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        supervisor.kill()
        if child and _running(child):
            os.killpg(child, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


FRAME = re.compile(r"^\s*\d+%\|.*\| (\d+)/(\d+) finished \[\d\d:\d\d, (\d+) checked, \d+ flagged, (\d+) failed, "
                   r"(\d+) cancelled, [-\d.]+/s, [-:\d]+ left\]$")


def assert_frames_agree(stderr: str) -> None:
    """Every drawn frame of `scan --wait`'s bar is one well-formed line whose count is the text's."""
    frames = [frame for frame in re.split(r"[\r\n]+", stderr) if "%|" in frame]
    assert frames, stderr
    for frame in frames:
        match = FRAME.match(frame.rstrip())
        assert match, f"malformed frame: {frame!r}"
        finished, _total, checked, failed, cancelled = (int(group) for group in match.groups())
        assert finished == checked + failed + cancelled, f"the bar and its text disagree: {frame!r}"


def test_scan_bar_draws_each_poll_as_one_consistent_line() -> None:
    """The bar read "16% 32/202" beside "done 0/202", and "100% 202/202" beside "done 160/202": each poll's
    count and text are drawn together, from one count."""
    stream = io.StringIO()
    polls = [{"done": done, "failed": failed, "cancelled": 0, "flagged": done // 10, "total": 202, "rate_per_s": rate,
              "eta_s": None if rate is None else 12}
             for done, failed, rate in [(0, 0, None), (30, 2, 3.0), (150, 10, 4.2), (198, 4, None)]]
    with scan_bar(polls[0], stream) as bar:
        for batch in polls:
            draw(bar, batch)
    assert_frames_agree(stream.getvalue())
    assert "202/202 finished" in stream.getvalue() and "198 checked" in stream.getvalue()


def test_check_sends_a_folder_as_one_upload_batch_and_prints_each_file_as_one_at_a_time(
        embedded_stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    names = ["a.jpg", "b.jpg", "c.jpg"]
    for name, data in zip(names, distinct_photos(3, size=96), strict=True):
        (folder / name).write_bytes(data)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg after all")
    env = {**embedded_stack.env, "FAKEWATCH_API_URL": embedded_stack.api_url,
           "FAKEWATCH_API_KEY": embedded_stack.api_key}

    batched = run(["check", "--jsonl", str(folder)], env)
    assert batched.returncode == 1, "a refused file fails the command"
    rows = [json.loads(line) for line in batched.stdout.splitlines()]
    order = ["a.jpg", "b.jpg", "broken.jpg", "c.jpg"]  # the folder walked as `fakewatch score` walks it
    assert [row["target"] for row in rows] == [str(folder / name) for name in order]
    broken = rows[2]
    assert broken["error"]["code"] == "invalid_image" and "id" not in broken, broken
    checks = [row for row in rows if "id" in row]
    assert all(row["status"] == "done" and row["verdict"] in ("real", "fake", "uncertain") for row in checks), checks
    batch_ids = {row["batch_id"] for row in checks}
    assert len(batch_ids) == 1 and None not in batch_ids, "the files went as one upload batch"
    batch = requests.get(f"{embedded_stack.api_url}/api/v1/batches/{batch_ids.pop()}",
                         headers=embedded_stack.headers(), timeout=30).json()
    assert batch["total"] == 3 and [(item["line"], item["value"]) for item in batch["invalid"]] == [(3, "broken.jpg")]
    assert "files finished" in batched.stderr, "a progress bar on stderr while the batch runs"

    # The same lines as sending each file in a request of its own (the answers are cached by now, the words not).
    as_batch = run(["check", str(folder)], env)
    one_by_one = run(["check", "--batch-size", "1", *(str(folder / name) for name in order)], env)
    assert as_batch.returncode == one_by_one.returncode == 1
    assert as_batch.stdout == one_by_one.stdout and len(as_batch.stdout.splitlines()) == 4, as_batch.stdout
