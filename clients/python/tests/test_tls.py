"""The clients over HTTPS: a second ``drover dev`` whose API serves a
certificate made here with openssl and requires client certificates signed
by a client CA. A client given the CA file and its certificate is answered
(sync, asyncio, and from the ``DROVER_API_*`` variables the CLI reads); one
that trusts only its default roots, or shows no certificate, is refused."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ADMIN_TOKEN, REPO
from drover_client import AsyncClient, Client, RetryPolicy, TransportError

ONCE = RetryPolicy(attempts=1)


@dataclass
class TlsCluster:
    url: str
    ca: Path
    cert: Path
    key: Path


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(cwd: Path, name: str) -> None:
    _openssl(cwd, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}")


def _signed(cwd: Path, ca: str, name: str, ext: str) -> None:
    _openssl(cwd, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}")
    (cwd / f"{name}.ext").write_text(ext)
    _openssl(cwd, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    binary = Path(os.environ.get("DROVER_BIN", REPO / "target" / "release" / "drover"))
    tmp = tmp_path_factory.mktemp("drover-tls")
    _ca(tmp, "ca")
    _ca(tmp, "client-ca")
    _signed(tmp, "ca", "server", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _signed(tmp, "client-ca", "client", "extendedKeyUsage=clientAuth\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROVER_")}
    env["DROVER_API_TOKENS"] = f"{ADMIN_TOKEN}:admin"
    env["DROVER_HTTP_TLS_CERT_FILE"] = str(tmp / "server.crt")
    env["DROVER_HTTP_TLS_KEY_FILE"] = str(tmp / "server.key")
    env["DROVER_HTTP_TLS_CLIENT_CA_FILE"] = str(tmp / "client-ca.crt")
    log = tmp / "drover-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), "dev", "--workers", "1", "--http", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
        )
    try:
        cluster = TlsCluster(url="", ca=tmp / "ca.crt", cert=tmp / "client.crt", key=tmp / "client.key")
        deadline = time.monotonic() + 30
        while not cluster.url:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"drover dev with TLS did not start:\n{log.read_text()}")
            m = re.search(r"drover dev: API (https://\S+?),", log.read_text(errors="replace"))
            if m:
                cluster.url = m.group(1)
            time.sleep(0.1)
        with Client(cluster.url, ADMIN_TOKEN, ca_file=cluster.ca, client_cert=cluster.cert,
                    client_key=cluster.key, retry=ONCE) as c:
            while True:
                try:
                    if c.workers():
                        break
                except TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"drover dev with TLS did not become ready:\n{log.read_text()}")
                time.sleep(0.1)
        yield cluster
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_client_with_the_ca_and_its_certificate_is_answered(tls_cluster: TlsCluster) -> None:
    c = tls_cluster
    with Client(c.url, ADMIN_TOKEN, ca_file=c.ca, client_cert=c.cert, client_key=c.key) as drover:
        s = drover.submit("echo", {"over": "tls"})
        assert drover.wait(s.id, timeout=30).result == {"over": "tls"}
    # The certificate and the key in one file.
    both = c.cert.with_name("client.pem")
    both.write_bytes(c.cert.read_bytes() + c.key.read_bytes())
    with Client(c.url, ADMIN_TOKEN, ca_file=str(c.ca), client_cert=both) as drover:
        assert drover.workers()


async def test_the_async_client_takes_the_same_options(tls_cluster: TlsCluster) -> None:
    c = tls_cluster
    async with AsyncClient(c.url, ADMIN_TOKEN, ca_file=c.ca, client_cert=c.cert, client_key=c.key) as drover:
        assert await drover.workers()


def test_from_env_reads_the_tls_variables_the_cli_reads(tls_cluster: TlsCluster,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    c = tls_cluster
    monkeypatch.setenv("DROVER_API", c.url)
    monkeypatch.setenv("DROVER_API_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("DROVER_API_CA_FILE", str(c.ca))
    monkeypatch.setenv("DROVER_API_CLIENT_CERT", str(c.cert))
    monkeypatch.setenv("DROVER_API_CLIENT_KEY", str(c.key))
    with Client.from_env() as drover:
        assert drover.workers()


def test_without_the_ca_or_without_a_certificate_the_client_is_refused(tls_cluster: TlsCluster) -> None:
    c = tls_cluster
    with Client(c.url, ADMIN_TOKEN, client_cert=c.cert, client_key=c.key, retry=ONCE) as drover:
        with pytest.raises(TransportError, match="(?i)certificate"):
            drover.workers()
    with Client(c.url, ADMIN_TOKEN, ca_file=c.ca, retry=ONCE) as drover:
        with pytest.raises(TransportError):
            drover.workers()


def test_tls_options_beside_an_own_http_client_are_refused() -> None:
    import httpx

    with httpx.Client() as http, pytest.raises(ValueError, match="own http client"):
        Client("https://127.0.0.1:9", ca_file="ca.crt", http=http)
    with pytest.raises(ValueError, match="client_key needs its client_cert"):
        Client("https://127.0.0.1:9", client_key="client.key")
