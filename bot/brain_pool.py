"""A pool of brain worker processes: Rasa's model off the hub's event loop, on every core.

:class:`BrainPool` implements :class:`bot.brain.Brain`. It starts *N* worker processes
(``python -m bot.brain_pool worker``), each building a brain from a factory — by default
:func:`rasa_brain`, a :class:`bot.brain.RasaAgentBrain` with the cached SQL tracker store on
``DATABASE_URL`` and the action endpoint — and serving turns on its own asyncio loop, several at
a time (Rasa awaits the action server over HTTP between inference steps).

* **Sharding.** A conversation always goes to worker ``crc32(conversation_id) % N``, so its
  cached tracker stays coherent (the hub already serialises turns per conversation, and the
  worker is the only writer of that conversation's tracker).
* **Transport.** One ``socketpair`` per worker (the child inherits its end as a file
  descriptor); newline-delimited JSON frames, UTF-8::

      parent → worker  {"op": "init", "factory": "module:callable", "options": {…}, "index": i}
                       {"op": "handle", "id": n, "conversation_id": …, "text": …, "metadata": {…}}
                       {"op": "cancel", "id": n, "conversation_id": …}
                       {"op": "parse", "id": n, "text": …}          (NLU only, no tracker)
      worker → parent  {"event": "loaded", "pid": …, "load_s": …, "cpu_s": …} | {"event": "load_failed", "error": …}
                       {"id": n, "turn": BrainTurn.to_dict()} | {"id": n, "parsed": {"intent", "confidence"}}
                       | {"id": n, "error": "…"[, "kind": "action_error"]}

  The options travel in the ``init`` frame, not on the command line (``ps`` would show a
  database password).
* **Failures.** A worker that exits fails its pending turns with :class:`BrainWorkerError` (the
  hub's guard then hands those conversations to a person, as for any brain error) and is
  restarted with a back-off; until it has loaded the model again :meth:`BrainPool.ready` is
  false and its conversations' turns fail fast the same way. A model that does not load is not
  retried: :meth:`BrainPool.load` raises and ``/healthz`` stays 503.
* **Cancellation.** When the hub gives up on a turn (``brain_timeout_s``) the pending call is
  cancelled and the worker is told: it cancels the turn, and either way drops that
  conversation's cached tracker (``forget``), so the next turn reads it back from the database.
* **Shutdown.** :meth:`BrainPool.close` closes the sockets (a worker exits on end of file) and
  reaps the processes, killing those that do not exit; the same end of file stops the workers
  when the hub process dies, however it dies.

Workers are separate interpreters started with :mod:`subprocess` (not ``fork``: TensorFlow and
fork do not mix); this module imports neither Rasa nor TensorFlow in the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import importlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

from bot.brain import ActionServerError, Brain, BrainTurn, RasaAgentBrain

logger = logging.getLogger(__name__)

RASA_FACTORY = "bot.brain_pool:rasa_brain"
STREAM_LIMIT = 16 * 2**20  # longest frame: a turn is a few KiB
_DRAIN_ABOVE = 2**20


class BrainWorkerError(RuntimeError):
    """A turn could not be answered by its worker (it failed, died, or is not loaded)."""


def default_workers() -> int:
    """The CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def shard(conversation_id: str, workers: int) -> int:
    """The worker of a conversation: stable across processes and restarts (unlike ``hash``)."""
    return zlib.crc32(conversation_id.encode("utf-8")) % workers


def rasa_brain(options: dict[str, Any]) -> RasaAgentBrain:
    """The default worker factory: ``options`` = ``{model_path, action_endpoint, tracker_store,
    action_token}``."""
    return RasaAgentBrain(options["model_path"], options.get("action_endpoint"), options.get("tracker_store"),
                          action_token=options.get("action_token"))


def make_brain(
    model_path: str, action_endpoint: str | None, database_url: str, workers: int | None,
    action_token: str | None = None,
) -> Brain:
    """The brain ``python -m bot serve`` uses: ``workers`` = 0 → the model in the hub's own
    process (:class:`RasaAgentBrain`); ≥ 1 → a :class:`BrainPool` of that many processes;
    ``None`` → one process per CPU."""
    if workers == 0:
        return RasaAgentBrain(model_path, action_endpoint, database_url, action_token=action_token)
    return BrainPool(
        {"model_path": model_path, "action_endpoint": action_endpoint, "tracker_store": database_url,
         "action_token": action_token},
        workers=workers,
    )


def _encode(frame: dict[str, Any]) -> bytes:
    # json.dumps escapes control characters, so a frame never contains a raw newline.
    return (json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str) + "\n").encode("utf-8")


class _Worker:
    """The parent's view of one worker process."""

    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None  # the parent's end, until the streams wrap it
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.loaded: asyncio.Future[float] | None = None  # load seconds, or the load error
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.drain_lock: asyncio.Lock | None = None
        self.generation = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def is_ready(self) -> bool:
        return (
            self.writer is not None
            and self.loaded is not None
            and self.loaded.done()
            and not self.loaded.cancelled()
            and self.loaded.exception() is None
            and self.proc is not None
            and self.proc.poll() is None
        )

    def write(self, frame: dict[str, Any]) -> bool:
        """Queue a frame (never blocks); false when the worker is gone."""
        if self.writer is None or self.writer.is_closing():
            return False
        self.writer.write(_encode(frame))
        return True


class BrainPool:
    """*N* brain worker processes behind the :class:`~bot.brain.Brain` protocol.

    :param options: passed to the factory in each worker (JSON-compatible).
    :param workers: number of processes (``None``: one per CPU; at least 1).
    :param factory: ``"module:callable"`` importable in the worker; called with ``options``, it
        returns a brain (with an optional ``async load()`` and ``forget(conversation_id)``).
    :param restart: restart a worker that exits after it had loaded.
    :param load_timeout_s: how long :meth:`load` waits for every worker.
    :param env: extra environment variables for the workers.
    """

    def __init__(
        self,
        options: dict[str, Any],
        workers: int | None = None,
        factory: str = RASA_FACTORY,
        *,
        restart: bool = True,
        load_timeout_s: float = 900.0,
        env: dict[str, str] | None = None,
    ):
        self.options = dict(options)
        self.factory = factory
        self.restart = restart
        self.load_timeout_s = load_timeout_s
        self.env = dict(env or {})
        self._workers = [_Worker(i) for i in range(max(1, workers if workers is not None else default_workers()))]
        self._ids = itertools.count(1)
        self._parse_turn = itertools.count()
        self._closing = False
        self._restarts: set[asyncio.Task[None]] = set()
        self._atexit = False

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int | None]:
        """The current worker process ids (``None`` for a worker not running)."""
        return [w.pid if w.proc is not None and w.proc.poll() is None else None for w in self._workers]

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker process that is not running (returns at once; the model loads in
        them meanwhile). :meth:`load` calls it; calling it earlier overlaps the model load with
        the rest of the hub's start-up."""
        if self._closing:
            raise BrainWorkerError("the brain pool is closed")
        for w in self._workers:
            if w.proc is None:
                self._spawn(w)

    def _spawn(self, w: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {**os.environ, **self.env}
        cmd = [sys.executable, "-m", "bot.brain_pool", "worker", "--fd", str(child.fileno()), "--index", str(w.index)]
        try:
            # A session of its own: a signal to the hub's process group (Ctrl-C, a supervisor's
            # SIGTERM) reaches the hub, which then stops its workers in order.
            w.proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), cwd=_root(), env=env, start_new_session=True)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        # The socket buffer takes the small init frame at once; the streams wrap it in load().
        parent.sendall(_encode({"op": "init", "factory": self.factory, "options": self.options, "index": w.index}))
        w.sock = parent
        w.generation += 1
        if not self._atexit:
            atexit.register(self.terminate)
            self._atexit = True
        logger.info("brain worker %d started (pid %d)", w.index, w.proc.pid)

    async def _connect(self, w: _Worker) -> None:
        assert w.sock is not None
        loop = asyncio.get_running_loop()
        w.reader, w.writer = await asyncio.open_unix_connection(sock=w.sock, limit=STREAM_LIMIT)
        w.sock = None
        w.loaded = loop.create_future()
        w.drain_lock = asyncio.Lock()
        w.reader_task = asyncio.ensure_future(self._read_loop(w))

    async def load(self) -> None:
        """Start the workers (in parallel) and wait until each has loaded its brain.

        Raises :class:`BrainWorkerError` when a worker fails to load or exits, or on timeout.
        """
        self.start()
        for w in self._workers:
            if w.writer is None and w.sock is not None:
                await self._connect(w)
        start = time.monotonic()
        waits = [asyncio.shield(w.loaded) for w in self._workers if w.loaded is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), self.load_timeout_s)
        except asyncio.TimeoutError:
            raise BrainWorkerError(f"the brain workers did not load in {self.load_timeout_s:.0f} s") from None
        logger.info("%d brain workers ready in %.1f s", self.size, time.monotonic() - start)

    async def ready(self) -> bool:
        """True only when every worker is running and has loaded its brain."""
        return not self._closing and all(w.is_ready() for w in self._workers)

    async def close(self) -> None:
        """Stop every worker: close its socket (it exits on end of file), then reap it, killing
        it after a few seconds. Pending turns fail with :class:`BrainWorkerError`."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        for w in self._workers:
            if w.writer is not None:
                w.writer.close()
            if w.sock is not None:
                w.sock.close()
                w.sock = None
        await asyncio.gather(*(asyncio.to_thread(self._reap, w, 5.0) for w in self._workers))
        tasks = [w.reader_task for w in self._workers if w.reader_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in self._workers:
            self._fail_pending(w, "the brain pool is closing")

    def terminate(self) -> None:
        """Stop every worker now with SIGTERM, SIGKILL after 2 s (synchronous; for ``atexit``
        and error paths, where the event loop may be gone)."""
        self._closing = True
        for w in self._workers:
            if w.sock is not None:
                w.sock.close()
                w.sock = None
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
        for w in self._workers:
            self._reap(w, 2.0)

    @staticmethod
    def _reap(w: _Worker, grace_s: float) -> None:
        proc = w.proc
        if proc is None:
            return
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # ---- turns ----------------------------------------------------------------------------

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        """One turn on the conversation's worker. Raises :class:`BrainWorkerError` when that
        worker failed the turn, died, or is not loaded."""
        w = self._workers[shard(conversation_id, len(self._workers))]
        if self._closing or not w.is_ready():
            raise BrainWorkerError(f"brain worker {w.index} is not ready")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        w.pending[rid] = fut
        try:
            w.write({"op": "handle", "id": rid, "conversation_id": conversation_id, "text": text,
                     "metadata": metadata})
            writer = w.writer
            if writer is not None and writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                assert w.drain_lock is not None
                async with w.drain_lock:
                    await writer.drain()
            data = await fut
        except asyncio.CancelledError:
            # The hub gave up (timeout) or is stopping: the worker cancels the turn and drops
            # the conversation's cached tracker.
            w.write({"op": "cancel", "id": rid, "conversation_id": conversation_id})
            raise
        finally:
            w.pending.pop(rid, None)
        return BrainTurn.from_dict(data)

    async def parse(self, text: str) -> tuple[str | None, float | None]:
        """The NLU's intent and confidence for ``text`` on one of the workers (no tracker is
        read or written, so any loaded worker will do: the next one in turn)."""
        ready = [w for w in self._workers if w.is_ready()]
        if self._closing or not ready:
            raise BrainWorkerError("no brain worker is ready")
        w = ready[next(self._parse_turn) % len(ready)]
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        w.pending[rid] = fut
        try:
            w.write({"op": "parse", "id": rid, "text": text})
            data = await fut
        finally:
            w.pending.pop(rid, None)
        confidence = data.get("confidence")
        return data.get("intent"), float(confidence) if confidence is not None else None

    # ---- the parent's reader --------------------------------------------------------------

    async def _read_loop(self, w: _Worker) -> None:
        assert w.reader is not None and w.loaded is not None
        loaded, generation = w.loaded, w.generation
        try:
            while True:
                line = await w.reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if "event" in msg:
                    if msg["event"] == "loaded" and not loaded.done():
                        logger.info("brain worker %d (pid %s) loaded in %.1f s (%.1f s of CPU since it started)",
                                    w.index, w.pid, msg.get("load_s", 0), msg.get("cpu_s", 0))
                        loaded.set_result(float(msg.get("load_s") or 0.0))
                    elif msg["event"] == "load_failed" and not loaded.done():
                        loaded.set_exception(BrainWorkerError(f"brain worker {w.index}: {msg.get('error')}"))
                    continue
                fut = w.pending.pop(int(msg["id"]), None)
                if fut is None or fut.done():
                    continue
                if "turn" in msg:
                    fut.set_result(msg["turn"])
                elif "parsed" in msg:
                    fut.set_result(msg["parsed"])
                elif msg.get("kind") == "action_error":
                    fut.set_exception(ActionServerError(f"brain worker {w.index}: {msg.get('error')}"))
                else:
                    fut.set_exception(BrainWorkerError(f"brain worker {w.index}: {msg.get('error')}"))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a garbled stream: treat the worker as lost
            logger.exception("brain worker %d sent an unreadable frame", w.index)
        finally:
            self._lost(w, loaded, generation)

    def _fail_pending(self, w: _Worker, reason: str) -> None:
        pending, w.pending = w.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(BrainWorkerError(f"brain worker {w.index}: {reason}"))

    def _lost(self, w: _Worker, loaded: asyncio.Future[float], generation: int) -> None:
        """The worker's stream ended: fail its turns, reap it, and restart it if it had loaded."""
        if generation != w.generation:
            return
        was_ready = loaded.done() and not loaded.cancelled() and loaded.exception() is None
        if not loaded.done():
            loaded.set_exception(BrainWorkerError(f"brain worker {w.index} exited while loading"))
        code = w.proc.poll() if w.proc is not None else None
        self._fail_pending(w, f"exited (code {code})" if code is not None else "connection lost")
        if w.writer is not None:
            w.writer.close()
        w.writer = w.reader = None
        if self._closing:
            return
        task = asyncio.ensure_future(self._recover(w, restart=was_ready and self.restart))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _recover(self, w: _Worker, *, restart: bool) -> None:
        """Reap a lost worker (killing it if its stream broke while it runs) and maybe restart it."""
        proc = w.proc
        if proc is not None:
            try:
                code = await asyncio.to_thread(proc.wait, 2.0)
            except subprocess.TimeoutExpired:
                proc.kill()  # a protocol error: do not leave it running
                code = await asyncio.to_thread(proc.wait)
            logger.error("brain worker %d (pid %d) exited with code %s", w.index, proc.pid, code)
        if restart:
            await self._restart(w)

    async def _restart(self, w: _Worker) -> None:
        delay = 1.0
        while not self._closing:
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                w.proc = None
                self._spawn(w)
                await self._connect(w)
                assert w.loaded is not None
                await asyncio.wait_for(asyncio.shield(w.loaded), self.load_timeout_s)
                logger.info("brain worker %d restarted (pid %s)", w.index, w.pid)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - try again later
                logger.exception("restarting brain worker %d failed", w.index)
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
                delay = min(30.0, delay * 2)


def _root() -> str:
    from bot.settings import ROOT

    return str(ROOT)


# ---- the worker process --------------------------------------------------------------------


def _import(spec: str) -> Callable[[dict[str, Any]], Any]:
    module, _, name = spec.partition(":")
    fn = getattr(importlib.import_module(module), name)
    if not callable(fn):
        raise TypeError(f"{spec} is not callable")
    return fn  # type: ignore[no-any-return]


def _forget(brain: Any, conversation_id: str) -> None:
    forget = getattr(brain, "forget", None)
    if forget is not None:
        with contextlib.suppress(Exception):
            forget(conversation_id)


async def serve_worker(fd: int) -> None:
    """The worker's loop: read the ``init`` frame from the inherited socket ``fd``, build and load
    the brain, then answer ``handle`` frames concurrently until the parent closes the socket."""
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)

    def send(frame: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(_encode(frame))

    line = await reader.readline()
    if not line:
        return
    init = json.loads(line)
    index = int(init.get("index", 0))
    started = time.monotonic()
    brain: Any = None
    tasks: dict[int, asyncio.Task[None]] = {}

    async def load() -> None:
        nonlocal brain
        try:
            brain = _import(str(init["factory"]))(dict(init.get("options") or {}))
            loader = getattr(brain, "load", None)
            if loader is not None:
                await loader()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
            logging.getLogger(__name__).exception("brain worker %d could not load its brain", index)
            send({"event": "load_failed", "error": f"{type(e).__name__}: {e}"})
            await writer.drain()
            os._exit(3)
        send({"event": "loaded", "pid": os.getpid(), "load_s": round(time.monotonic() - started, 2),
              "cpu_s": round(time.process_time(), 2)})

    async def turn(rid: int, cid: str, text: str, metadata: dict[str, Any]) -> None:
        try:
            result = await brain.handle(cid, text, metadata)
            send({"id": rid, "turn": result.to_dict()})
        except asyncio.CancelledError:
            _forget(brain, cid)
        except Exception as e:  # noqa: BLE001 - the parent's guard hands off
            _forget(brain, cid)
            frame: dict[str, Any] = {"id": rid, "error": f"{type(e).__name__}: {e}"}
            if isinstance(e, ActionServerError):
                frame["kind"] = "action_error"  # the hub tells the customer something went wrong
            send(frame)
        finally:
            tasks.pop(rid, None)

    async def parse(rid: int, text: str) -> None:
        try:
            intent, confidence = await brain.parse(text)
            send({"id": rid, "parsed": {"intent": intent, "confidence": confidence}})
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - the hub leaves the transcript unlabelled
            send({"id": rid, "error": f"{type(e).__name__}: {e}"})
        finally:
            tasks.pop(rid, None)

    loading = asyncio.ensure_future(load())
    while True:
        line = await reader.readline()
        if not line:
            break  # the parent closed the socket or died
        msg = json.loads(line)
        op, rid = msg.get("op"), int(msg.get("id", 0))
        if op == "handle":
            if not loading.done() or brain is None:
                send({"id": rid, "error": "the brain is not loaded yet"})
                continue
            tasks[rid] = asyncio.ensure_future(
                turn(rid, str(msg["conversation_id"]), str(msg["text"]), dict(msg.get("metadata") or {}))
            )
        elif op == "parse":
            if not loading.done() or brain is None or getattr(brain, "parse", None) is None:
                send({"id": rid, "error": "this brain cannot parse"})
                continue
            tasks[rid] = asyncio.ensure_future(parse(rid, str(msg["text"])))
        elif op == "cancel":
            task = tasks.get(rid)
            if task is not None:
                task.cancel()
            elif brain is not None:
                _forget(brain, str(msg.get("conversation_id")))  # the turn finished meanwhile
    # Without the parent nobody reads the answers: leave at once (a model load in a thread
    # would otherwise keep the interpreter alive).
    os._exit(0)


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.brain_pool worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the hub stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s brain-worker-{args.index} %(name)s: %(message)s"
    )
    asyncio.run(serve_worker(args.fd))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(_worker_main(sys.argv[2:]))
    print("usage: python -m bot.brain_pool worker --fd N [--index I] (started by BrainPool)", file=sys.stderr)
    sys.exit(2)
