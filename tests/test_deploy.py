"""The production files of docs/deploy.md run, so that they cannot silently rot (issue #15).

* ``deploy/systemd/``: ``systemd-analyze verify`` on copies of the units (``/opt/humanline`` → this
  checkout, ``/etc/humanline`` → a temporary directory), then each unit's command lines run as
  real processes with the unit's ``Environment=`` and ``EnvironmentFile=`` (the example env file,
  its ``DATABASE_URL`` on a fresh PostgreSQL database and ``REDIS_URL`` on a Redis of the test's
  own, free ports): the action server, then two instances of ``humanline-hub@.service`` (the
  instance name is the port, as in the unit) each with its ``ExecStartPre`` migration. In front of
  them HAProxy with ``deploy/haproxy-tls.cfg`` (a self-signed certificate, local ports and the two
  hubs for Docker's ``server-template``): ``haproxy -c``, ``/healthz`` over TLS, the HTTP
  redirect, and a customer over ``wss://`` through it whose complaint opens a case (through the
  shared action server) with a link on ``HUMANLINE_PUBLIC_URL``. The services' user's home stays
  empty (``ProtectSystem=strict`` makes it read-only; the units point ``HOME`` elsewhere).
* ``deploy/compose.yml``: the services are coherent with each other and with the code (every
  variable a hub of a cluster needs is set, every variable set is one the code reads, the
  endpoint names the action service and its port, HAProxy mounts the files that exist), the
  Dockerfile of docs/deploy.md copies what exists and runs the Makefile's commands, and the
  ``migrate``, ``actions`` and ``hub`` commands run as processes with the compose environment
  (the service names ``postgres``, ``redis`` and ``actions`` mapped to local ports) and open a case.
  Both deployments start together in one fixture: their hubs load the model in parallel.

Not covered: the container images themselves (no Docker engine here), Docker's DNS and the
sandboxing of the units (``User=``, ``ProtectSystem=``: no systemd as PID 1 in the test container).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bot.client import ChatClient
from bot.cluster import ensure_haproxy
from tests.faultkit import fresh_postgres_database, wait_until
from tests.hubtools import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
ENV_EXAMPLE = UNITS / "humanline.env.example"
COMPOSE = DEPLOY / "compose.yml"
HAPROXY_TLS = DEPLOY / "haproxy-tls.cfg"
DOCS = ROOT / "docs" / "deploy.md"

#: What every hub of a cluster must be given, and why (bot/settings.py reads them all).
CLUSTER_VARIABLES = {
    "DATABASE_URL": "else each hub has its own SQLite file",
    "REDIS_URL": "else frames, presence and limits stay inside one hub",
    "HUMANLINE_ACTION_TOKEN": "else each hub invents its own and the shared action server refuses it",
    "HUMANLINE_ACTION_ENDPOINT": "the shared action server",
    "HUMANLINE_TRUSTED_PROXIES": "else every client is the balancer's address for the limits",
    "HUMANLINE_PUBLIC_URL": "else case links point at http://127.0.0.1:8080",
}
#: The systemd environment before Environment= and EnvironmentFile= (systemd starts services clean).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", "/root")}


# ---- reading the files ------------------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file: section → ``(key, value)`` in order (keys such as ``Environment=`` repeat,
    which ``configparser`` does not allow)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def read_env_file(path: Path) -> dict[str, str]:
    """An ``EnvironmentFile=``: ``KEY=value`` lines, ``#`` comments."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}: bad line {raw!r}"
        env[key] = value.strip().strip('"')
    return env


def command_line(value: str, instance: str) -> list[str]:
    """An ``ExecStart=`` value as argv: ``%i`` is the instance; the ``-``/``@``/``+`` prefixes are refused
    (none is used, and a failure must not be ignored)."""
    assert not value.startswith(("-", "@", "+", "!", ":")), value
    return shlex.split(value.replace("%i", instance))


def unit_environment(unit: dict[str, list[tuple[str, str]]], instance: str, home: Path) -> dict[str, str]:
    """The environment systemd gives the service: ``Environment=`` first, then the ``EnvironmentFile=``
    files, which win (systemd.exec(5)). ``home`` is the ``User=``'s home directory."""
    env = {**BASE_ENV, "HOME": str(home)}
    for value in unit_values(unit, "Environment"):
        for item in shlex.split(value.replace("%i", instance)):
            key, _, val = item.partition("=")
            env[key] = val
    for value in unit_values(unit, "EnvironmentFile"):
        env.update(read_env_file(Path(value.lstrip("-"))))
    return env


def variables_read_by_code() -> set[str]:
    """Every environment variable name the hub, the action server and the migrations read."""
    names: set[str] = set()
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "actions").rglob("*.py")]:
        text = path.read_text()
        names.update(re.findall(r"""(?:_env|environ\.get|getenv|environ)\s*[\(\[]\s*["']([A-Z][A-Z0-9_]+)["']""", text))
        names.update(re.findall(r"""_choice\(\s*["']([A-Z][A-Z0-9_]+)["']""", text))
    return names


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (a missing required one fails)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        got = env.get(name, "")
        if op == ":?" and not got:
            raise AssertionError(f"compose needs {name}: {arg}")
        if op == ":-" and not got:
            return arg
        return got

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", one, value)


def dockerfile() -> list[str]:
    """The instructions of the Dockerfile shown in docs/deploy.md."""
    m = re.search(r"```dockerfile\n(.*?)```", DOCS.read_text(), re.S)
    assert m, "docs/deploy.md shows no Dockerfile"
    return [line for line in m.group(1).splitlines() if line.strip() and not line.startswith("#")]


# ---- processes ---------------------------------------------------------------------------------------


@dataclass
class Procs:
    """Processes started by a test, stopped (their process groups) at the end."""

    workdir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def run(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 120) -> str:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"{name}: {argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((name, proc))
        return proc

    def tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
        return ""

    def wait_http(self, name: str, url: str, timeout: float = 180, context: ssl.SSLContext | None = None) -> None:
        proc = dict(self.started)[name]

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            return status(url, context) == 200

        try:
            wait_until(up, timeout, f"{name}: {url} answers 200", interval=0.3)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.tail(name)}") from None

    def stop(self) -> None:
        for _name, proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.started:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def status(url: str, context: ssl.SSLContext | None = None) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the test's own (the machine's 6379 is shared with other clusters), started
    as deploy/compose.yml starts it: no persistence."""
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import redis

        wait_until(lambda: _ping(redis, port), 10, "redis-server answers")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _ping(redis: Any, port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - not yet
        return False


def self_signed(certdir: Path) -> Path:
    """A PEM (certificate and key, as HAProxy's ``crt`` wants them) for ``localhost`` and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certdir.mkdir(parents=True, exist_ok=True)
    pem = certdir / "localhost.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return pem


def substitute(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; fails when ``old`` is not there (the file changed under the test)."""
    assert old in text, f"expected {old!r} in the file"
    return text.replace(old, new)


def haproxy_config(certdir: Path, http_port: int | None = None, https_port: int | None = None,
                   hubs: list[int] | None = None) -> str:
    """deploy/haproxy-tls.cfg with the certificates in ``certdir`` (compose mounts ./certs at
    /etc/haproxy/certs) and, when given, local ports and the hubs in place of Docker's DNS."""
    cfg = HAPROXY_TLS.read_text()
    cfg = substitute(cfg, "crt /etc/haproxy/certs/", f"crt {certdir}/")
    if http_port is not None:
        cfg = substitute(cfg, "bind :80\n", f"bind 127.0.0.1:{http_port}\n")
    if https_port is not None:
        cfg = substitute(cfg, "bind :443 ", f"bind 127.0.0.1:{https_port} ")
    if hubs is not None:
        servers = "\n".join(f"    server hub{i} 127.0.0.1:{port} check" for i, port in enumerate(hubs, 1))
        cfg = substitute(cfg, "    server-template hub 10 hub:8080 check", servers)
    return cfg


def tls_context(pem: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(str(pem))
    return context


# ---- systemd -----------------------------------------------------------------------------------------


def installed_units(target: Path, etc: Path) -> dict[str, Path]:
    """Copies of the units with ``/opt/humanline`` → this checkout, ``/etc/humanline`` → ``etc`` and the
    state directory ``/var/lib/humanline`` → ``state`` next to ``etc``."""
    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for unit in sorted(UNITS.glob("*.service")):
        text = (unit.read_text().replace("/opt/humanline", str(ROOT)).replace("/etc/humanline", str(etc))
                .replace("/var/lib/humanline", str(etc.parent / "state")))
        (target / unit.name).write_text(text)
        out[unit.name] = target / unit.name
    assert set(out) == {"humanline-actions.service", "humanline-hub@.service"}, out
    return out


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian's systemd package)")
    installed_units(tmp_path / "units", tmp_path / "etc")
    done = subprocess.run(["systemd-analyze", "verify", "humanline-actions.service", "humanline-hub@8081.service"],
                          cwd=tmp_path / "units", capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # Unknown keys and other complaints are only warnings for systemd: none is accepted.
    assert not [line for line in output.splitlines() if "humanline" in line], output


def test_env_example_fits_the_units() -> None:
    env = read_env_file(ENV_EXAMPLE)
    known = variables_read_by_code()
    assert not set(env) - known, f"variables no code reads (typos?): {sorted(set(env) - known)}"
    missing = {k: why for k, why in CLUSTER_VARIABLES.items() if not env.get(k)}
    assert not missing, f"humanline.env.example lacks: {missing}"
    assert env.get("HUMANLINE_SECRET") or env.get("HUMANLINE_SECRET_FILE"), "no secret for the hubs"
    hub = read_unit(UNITS / "humanline-hub@.service")
    actions = read_unit(UNITS / "humanline-actions.service")
    per_instance = {item.split("=", 1)[0] for v in unit_values(hub, "Environment") for item in shlex.split(v)}
    # EnvironmentFile= wins over Environment=: the file must not set what each instance sets.
    assert not per_instance & set(env), f"the env file would override {per_instance & set(env)}"
    assert {"HUMANLINE_PORT", "HUMANLINE_START_ACTION_SERVER"} <= per_instance
    argv = command_line(unit_values(actions, "ExecStart")[0], "")
    port = argv[argv.index("--port") + 1]
    host = argv[argv.index("--host") + 1]
    endpoint = urlsplit(env["HUMANLINE_ACTION_ENDPOINT"])
    assert (endpoint.hostname, str(endpoint.port)) == (host, port), "the endpoint is not the action server's address"
    for unit in (hub, actions):
        assert unit_values(unit, "EnvironmentFile") == ["/etc/humanline/humanline.env"]
    # After= only orders: the hubs also pull in the action server they cannot answer without.
    after = {u for v in unit_values(hub, "After", "Unit") for u in v.split() if u.startswith("humanline")}
    wants = {u for v in unit_values(hub, "Wants", "Unit") for u in v.split()}
    assert after == {"humanline-actions.service"} and after <= wants, (after, wants)


def start_systemd_stack(procs: Procs, workdir: Path, database_url: str, redis_url: str) -> list[int]:
    """The action server and two ``humanline-hub@<port>`` instances, run as systemd would run the
    units (the example env file with the test's database, Redis and ports); the hubs' ports."""
    etc, home = workdir / "etc", workdir / "home"
    etc.mkdir(parents=True)
    home.mkdir()
    (workdir / "state").mkdir()  # StateDirectory=: systemd creates it, writable by User=
    units = {name: read_unit(path) for name, path in installed_units(workdir / "units", etc).items()}
    action_port, hub_ports = free_port(), [free_port(), free_port()]
    env = read_env_file(ENV_EXAMPLE)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    env["HUMANLINE_ACTION_ENDPOINT"] = substitute(env["HUMANLINE_ACTION_ENDPOINT"], ":5055/", f":{action_port}/")
    secret_file = Path(env["HUMANLINE_SECRET_FILE"].replace("/etc/humanline", str(etc)))
    env["HUMANLINE_SECRET_FILE"] = str(secret_file)
    secret_file.write_text("deploy-test-secret-" + "x" * 40 + "\n")
    (etc / "humanline.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    actions = units["humanline-actions.service"]
    argv = command_line(unit_values(actions, "ExecStart")[0], "")
    argv[argv.index("--port") + 1] = str(action_port)
    cwd = Path(unit_values(actions, "WorkingDirectory")[0])
    procs.start("systemd-actions", argv, unit_environment(actions, "", home), cwd)

    hub = units["humanline-hub@.service"]
    cwd = Path(unit_values(hub, "WorkingDirectory")[0])

    def instance(port: int) -> None:
        """One instance as systemd starts it: its ``ExecStartPre`` lines in order, then ``ExecStart``."""
        env = unit_environment(hub, str(port), home)
        for pre in unit_values(hub, "ExecStartPre"):
            procs.run(f"hub@{port} pre", command_line(pre, str(port)), env, cwd)
        procs.start(f"hub@{port}", command_line(unit_values(hub, "ExecStart")[0], str(port)), env, cwd)

    # systemd starts the instances together: both migrate the new database at once.
    with ThreadPoolExecutor(len(hub_ports)) as pool:
        for future in [pool.submit(instance, port) for port in hub_ports]:
            future.result()
    return hub_ports


def start_compose_stack(procs: Procs, workdir: Path, database_url: str, redis_url: str, model: Path) -> int:
    """``migrate`` (to its end), ``actions`` and one ``hub`` replica of deploy/compose.yml with the
    compose environment, the service names mapped to local addresses and the model at the path the
    image has it; the hub's port."""
    services = compose()["services"]
    action_port, hub_port = free_port(), free_port()
    image_model = workdir / "app" / "models" / "current.tar.gz"
    image_model.parent.mkdir(parents=True)
    image_model.symlink_to(model)

    def local(env: dict[str, Any]) -> dict[str, str]:
        out = {**BASE_ENV, **{k: str(v) for k, v in env.items()}}
        out["DATABASE_URL"] = database_url
        out["REDIS_URL"] = substitute(out["REDIS_URL"], "redis://redis:6379/", redis_url.rsplit("/", 1)[0] + "/")
        out["HUMANLINE_ACTION_ENDPOINT"] = substitute(out["HUMANLINE_ACTION_ENDPOINT"], "//actions:5055/",
                                                      f"//127.0.0.1:{action_port}/")
        out["HUMANLINE_HOST"] = "127.0.0.1"
        out["HUMANLINE_PORT"] = str(hub_port)
        out["HUMANLINE_MODEL"] = substitute(out["HUMANLINE_MODEL"], "/app/models/current.tar.gz", str(image_model))
        return out

    def argv(service: str) -> list[str]:
        command = list(services[service]["command"])
        assert command[:2] == ["python", "-m"], command
        return [sys.executable, *command[1:]]

    out = procs.run("compose-migrate", argv("migrate"), local(services["migrate"]["environment"]))
    assert "database migrated" in out
    command = argv("actions")
    command[command.index("--port") + 1] = str(action_port)
    command[command.index("--host") + 1] = "127.0.0.1"
    procs.start("compose-actions", command, local(services["actions"]["environment"]))
    procs.start("compose-hub", argv("hub"), local(services["hub"]["environment"]))
    return hub_port


@dataclass
class Stacks:
    procs: Procs
    workdir: Path
    systemd_hubs: list[int]
    compose_hub: int


@pytest.fixture(scope="module")
def stacks(postgres_url: str, redis_url: str, trained_model: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    """Both deployments at once, each on a fresh database (the hubs load their models in parallel)."""
    workdir = tmp_path_factory.mktemp("deploy")
    procs = Procs(workdir)
    with contextlib.ExitStack() as stack:
        systemd_db = stack.enter_context(fresh_postgres_database(postgres_url))
        compose_db = stack.enter_context(fresh_postgres_database(postgres_url))
        stack.callback(procs.stop)  # before the databases are dropped
        # Separate Redis databases: the two deployments must not see each other's presence.
        hubs = start_systemd_stack(procs, workdir / "systemd", systemd_db, redis_url)
        compose_redis = redis_url.rsplit("/", 1)[0] + "/1"
        hub = start_compose_stack(procs, workdir / "compose", compose_db, compose_redis, trained_model)
        yield Stacks(procs, workdir, hubs, hub)


async def open_a_case(url: str) -> str:
    """A customer complains over ``url``: the bot opens a case through the action server (the hub's
    token, the action server's public URL); the text of the bot's answer with the case link."""
    async with ChatClient(url, lang="en") as chat:
        await chat.say("the technician never showed up, I waited home all day")
        try:
            frame = await chat.wait_for(lambda f: f.get("type") == "message" and f.get("sender") == "bot"
                                        and "/case/" in f.get("text", ""), timeout=60)
        except asyncio.TimeoutError:
            raise AssertionError(f"no case link within 60 s; the frames: {chat.frames}") from None
        return str(frame["text"])


@pytest.mark.model
@pytest.mark.postgres
def test_units_run_a_cluster_behind_haproxy_tls(stacks: Stacks) -> None:
    procs, workdir = stacks.procs, stacks.workdir / "systemd"
    for port in stacks.systemd_hubs:
        procs.wait_http(f"hub@{port}", f"http://127.0.0.1:{port}/healthz")

    http_port, https_port = free_port(), free_port()
    certdir = workdir / "certs"
    pem = self_signed(certdir)
    binary = ensure_haproxy()
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config(certdir, http_port, https_port, stacks.systemd_hubs))
    procs.run("haproxy -c", [binary, "-c", "-f", str(config)], dict(os.environ))
    procs.start("haproxy", [binary, "-db", "-f", str(config)], dict(os.environ))
    context = tls_context(pem)
    procs.wait_http("haproxy", f"https://localhost:{https_port}/healthz", timeout=30, context=context)
    with urllib.request.urlopen(f"https://localhost:{https_port}/healthz", timeout=5, context=context) as r:
        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(f"http://localhost:{http_port}/healthz", timeout=5)
    assert redirect.value.code == 301
    assert redirect.value.headers["Location"] == f"https://localhost:{http_port}/healthz"

    os.environ["SSL_CERT_FILE"] = str(pem)  # websockets' default TLS context trusts the test's certificate
    try:
        text = asyncio.run(open_a_case(f"wss://localhost:{https_port}/ws/chat"))
    finally:
        del os.environ["SSL_CERT_FILE"]
    public_url = read_env_file(ENV_EXAMPLE)["HUMANLINE_PUBLIC_URL"]
    assert f"{public_url}/case/HL-" in text, text
    # ProtectSystem=strict leaves only ReadWritePaths= (the checkout), StateDirectory= and the private
    # /tmp writable: nothing may have needed the user's home (the model comes from models/).
    written = sorted(str(p.relative_to(workdir)) for p in (workdir / "home").rglob("*"))
    assert not written, f"the services wrote to the read-only home directory: {written}"


def test_haproxy_tls_config_is_valid_as_shipped(tmp_path: Path) -> None:
    """``haproxy -c`` on deploy/haproxy-tls.cfg as compose mounts it: only the certificate
    directory is the test's (Docker's DNS names are resolved at run time, ``init-addr none``)."""
    certdir = tmp_path / "certs"
    self_signed(certdir)
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(certdir))
    done = subprocess.run([ensure_haproxy(), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- compose -----------------------------------------------------------------------------------------

COMPOSE_ENV = {"POSTGRES_PASSWORD": "pw", "HUMANLINE_SECRET": "compose-test-secret-" + "y" * 40,
               "HUMANLINE_ACTION_TOKEN": "compose-test-token", "HUMANLINE_PUBLIC_URL": "https://support.example.com"}
HUMANLINE_SERVICES = ("migrate", "actions", "hub")


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    return dict(interpolate(data, COMPOSE_ENV if env is None else env))


def test_compose_refuses_to_start_without_its_secrets() -> None:
    for name in COMPOSE_ENV:
        with pytest.raises(AssertionError, match=name):
            compose({k: v for k, v in COMPOSE_ENV.items() if k != name})


def test_compose_is_coherent() -> None:
    data = compose()
    services = data["services"]
    hub_env = {k: str(v) for k, v in data["x-hub-env"].items()}
    known = variables_read_by_code()
    assert not set(hub_env) - known, f"variables no code reads (typos?): {sorted(set(hub_env) - known)}"
    missing = {k: why for k, why in CLUSTER_VARIABLES.items() if not hub_env.get(k)}
    assert not missing, f"x-hub-env lacks: {missing}"
    assert hub_env["HUMANLINE_SECRET"] and hub_env["HUMANLINE_START_ACTION_SERVER"] == "0"
    for name in HUMANLINE_SERVICES:
        assert services[name]["image"] == "humanline:latest"
        assert {k: str(v) for k, v in services[name]["environment"].items()} == hub_env, name
    # The database is the postgres service's, the action endpoint the actions service's.
    db = urlsplit(hub_env["DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert (db.hostname, db.port, db.username, db.password, db.path.strip("/")) == (
        "postgres", 5432, pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert urlsplit(hub_env["REDIS_URL"]).hostname == "redis"
    endpoint = urlsplit(hub_env["HUMANLINE_ACTION_ENDPOINT"])
    command = services["actions"]["command"]
    assert (endpoint.hostname, str(endpoint.port)) == ("actions", command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"
    # HAProxy: the files it mounts exist (certs/ is the operator's), and the configuration finds
    # the hubs on the port they listen on and the certificates where they are mounted.
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["haproxy"]["volumes"])
    assert mounts.get("./haproxy-tls.cfg") == "/usr/local/etc/haproxy/haproxy.cfg", mounts
    assert (DEPLOY / "haproxy-tls.cfg").is_file()
    cfg = HAPROXY_TLS.read_text()
    crt = re.search(r"ssl crt (\S+)", cfg)
    assert crt and crt.group(1).rstrip("/") == mounts["./certs"], (crt, mounts)
    template = re.search(r"server-template \S+ \d+ (\S+):(\d+)", cfg)
    assert template and template.groups() == ("hub", hub_env["HUMANLINE_PORT"])
    assert "hub" in services and hub_env["HUMANLINE_HOST"] == "0.0.0.0"
    # The model the hubs load is the one the Dockerfile of docs/deploy.md puts there.
    steps = dockerfile()
    workdir = next(s.split()[1] for s in steps if s.startswith("WORKDIR"))
    model = Path(hub_env["HUMANLINE_MODEL"])
    assert model.parent.parent == Path(workdir)
    assert any(f"models/{model.name}" in s for s in steps if s.startswith("RUN")), steps


def test_dockerfile_of_the_docs_runs_the_makefile_commands() -> None:
    steps = dockerfile()
    makefile = (ROOT / "Makefile").read_text()
    for step in steps:
        op, _, rest = step.partition(" ")
        if op == "COPY":
            *sources, _dest = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), step
            if "." in sources:
                # The context leaves out what must not go into the image: the local venv, local
                # databases, and the models (the RUN step copies the one archive it trains).
                ignored = set((ROOT / ".dockerignore").read_text().split())
                assert {".venv", "models", "*.db"} <= ignored, ignored
        if op == "FROM":
            # The Makefile requires Python 3.10 (Rasa 3.6).
            assert "python:3.10" in rest and "3.10" in makefile
        if op == "RUN":
            for command in rest.split("&&"):
                words = command.split()
                if words[:2] == ["python", "-m"]:
                    assert f"$(PY) -m {' '.join(words[2:])}" in makefile, command
                if words[:2] == ["pip", "install"]:
                    # The Makefile installs the checkout itself (with its dev extras).
                    assert words[-2:] == ["-e", "."] and "-e '.[dev]'" in makefile, command


@pytest.mark.model
@pytest.mark.postgres
def test_compose_commands_run(stacks: Stacks) -> None:
    """migrate, actions and one hub replica of the compose file serve a customer."""
    stacks.procs.wait_http("compose-hub", f"http://127.0.0.1:{stacks.compose_hub}/healthz")
    text = asyncio.run(open_a_case(f"ws://127.0.0.1:{stacks.compose_hub}/ws/chat"))
    assert f"{COMPOSE_ENV['HUMANLINE_PUBLIC_URL']}/case/HL-" in text, text
