"""The READMEs' commands work as written: every shell block is run, in a copy of the repository.

The README promises two top commands that work on a fresh machine (the demo,
and the tests), and the gunicorn example's README a handful more.  Each
```sh block is taken from the Markdown itself and run with bash, so a README
edit that breaks a command fails here.  Two deliberate departures, both
checked rather than ignored:

* ``python3 -m venv .venv && .venv/bin/pip install -q -e ".[extras]" ...``
  is not run: creating a venv and downloading a mongod wheel takes minutes.
  The test checks that the extras exist in setup.cfg and that what they
  install is importable here, then runs the rest of the command with
  ``.venv/bin/`` replaced by this interpreter's ``bin`` directory (the copy
  is on ``PYTHONPATH``, so its ``mongo_requests`` is the one imported).
  The literal command, venv included, is run by hand from a fresh clone
  before a release (docs/design.md, "Testing").
* ``bash .ci/run`` would run this test again: the test checks that the
  script exists, parses, and is the one that runs pytest.

The gunicorn example uses fixed ports (mongod on 27017, the app on 8000), as
a user following it would.  If either is taken, the test fails and says so.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

# Every test here runs the commands in child processes that choose their own
# patching (gunicorn -k gevent patches its workers), so one mode is enough.
pytestmark = pytest.mark.modes("threads")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MAIN_README = "README.md"
GUNICORN_README = os.path.join("examples", "gunicorn_app", "README.md")

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.M | re.S)
# python3 -m venv .venv && .venv/bin/pip install -q -e ".[extra,...]" ["pkg[extra]" ...] [&& ...]
_VENV = re.compile(
    r'^python3 -m venv \.venv && \.venv/bin/pip install -q -e "\.\[([\w,-]+)\]"((?: "?[\w\[\],-]+"?)*)(?: && |$)'
)


def code_blocks(readme: str, languages: tuple[str, ...] = ("sh", "bash", "shell")) -> list[str]:
    """The fenced code blocks of ``readme`` (a path under ROOT) in those languages."""
    with open(os.path.join(ROOT, readme), encoding="utf-8") as fh:
        text = fh.read()
    return [body for lang, body in _FENCE.findall(text) if lang in languages]


def _extras() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    return dict(parser["options.extras_require"])


def _requires(dist: str, extra: str) -> list[str]:
    """Import names of what ``dist[extra]`` adds (best effort: distribution name = module name)."""
    if not extra:
        return []
    found = []
    for req in importlib.metadata.requires(dist) or ():
        spec, _, marker = req.partition(";")
        if re.search(r"extra\s*==\s*['\"]%s['\"]" % re.escape(extra), marker):
            found.append(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0].replace("-", "_").lower())
    return found


def adapt(command: str) -> str:
    """Drop the venv set-up (after checking it) and use this interpreter's bin directory."""
    m = _VENV.match(command)
    if m:
        extras = _extras()
        for extra in m[1].split(","):
            assert extra in extras, "README installs extra %r, which setup.cfg lacks" % extra
        for requirement in (m[2] or "").split():
            # "gunicorn[gevent]": the package and what its extra requires.
            name, _, extra = requirement.strip('"').rstrip("]").partition("[")
            assert importlib.util.find_spec(name), "README installs %r; it is not installed here" % name
            for dep in _requires(name, extra):
                assert importlib.util.find_spec(dep), "%s needs %r; it is not installed here" % (requirement, dep)
        command = command[m.end() :]
    assert "pip install" not in command, "an install this test does not know how to check:\n" + command
    return command.replace(".venv/bin/", BIN + "/")


@pytest.fixture
def repo_copy(tmp_path) -> str:
    """A copy of the working tree (no .git, caches or venvs), as a fresh clone would have."""
    dest = str(tmp_path / "repo")
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(".git", ".tox", ".venv", "venv", "__pycache__", "*.egg-info", ".pytest_cache"),
    )
    return dest


def _env(repo: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = repo
    # A fresh machine has no MONGODB_URI: the commands must bring their own server.
    env.pop("MONGODB_URI", None)
    env.pop("MONGO_REQUESTS_TEST_MODE", None)
    return env


def _run(command: str, repo: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=repo,
        env=_env(repo),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_readme_has_the_two_top_commands():
    blocks = code_blocks(MAIN_README)
    assert len(blocks) == 2, "the README should have exactly two shell commands, not:\n%s" % "\n".join(blocks)
    demo, tests = (b.strip() for b in blocks)
    assert _VENV.match(demo) and demo.endswith("examples/page_view_counters.py"), demo
    assert tests == "bash .ci/run", tests


def test_ci_run_is_the_test_command():
    # Running it here would run this very test again; check what it is instead.
    (command,) = [b.strip() for b in code_blocks(MAIN_README) if ".ci/run" in b]
    path = os.path.join(ROOT, command.split()[1])
    assert os.path.isfile(path), path
    syntax = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    with open(path, encoding="utf-8") as fh:
        script = fh.read()
    assert script.startswith("#!/usr/bin/env bash"), script[:40]
    assert re.search(r"pip install -q -e \"\.\[test(,\w+)*\]\"", script), "it must install the test extra"
    # pytest itself, or the tests' own runner that patches first and then starts pytest.
    assert re.search(r"\.venv/bin/python (-m pytest|tests/run_\w+\.py)", script), "it must run the suite"
    assert "gevent" in script, "it must run the gevent modes too"
    # The lint step: mypy (its settings in pyproject.toml) and ruff, installed by the lint extra.
    assert re.search(r"pip install -q -e \"\.\[[\w,]*\blint\b", script), "it must install the lint extra"
    assert "python -m mypy" in script and "python -m ruff check ." in script, "it must run the lint step"


def test_demo_command(repo_copy):
    (demo,) = [b.strip() for b in code_blocks(MAIN_README) if "page_view_counters" in b]
    t0 = time.monotonic()
    proc = _run(adapt(demo), repo_copy, timeout=240)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, "exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        proc.returncode,
        proc.stdout,
        proc.stderr,
    )
    assert "(throwaway mongod)" in proc.stdout, proc.stdout
    assert "OK: every visitor saw their own visit" in proc.stdout, proc.stdout
    assert elapsed < 120, "the demo took %.0fs" % elapsed


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def test_gunicorn_readme_commands(repo_copy):
    install, serve, visits = [b.strip() for b in code_blocks(GUNICORN_README)]
    assert _VENV.match(install) and adapt(install) == "", install
    for port in (27017, 8000):
        if not _port_free(port):
            pytest.fail(
                "port %d on 127.0.0.1 is in use, and examples/gunicorn_app/README.md needs it "
                "(mongod on 27017, the app on 8000): stop what listens there and run again" % port,
                pytrace=False,
            )
    log_path = os.path.join(repo_copy, "serve.log")
    with open(log_path, "wb") as log:
        # Its own session, so that the whole group (the shell, the mongod
        # launcher, gunicorn and its workers) can be stopped together.
        server = subprocess.Popen(
            ["bash", "-c", adapt(serve)],
            cwd=repo_copy,
            env=_env(repo_copy),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _http_get("http://127.0.0.1:8000/totals")
                break
            except OSError:
                pass
            assert server.poll() is None, "the serve commands exited (%s):\n%s" % (
                server.returncode,
                open(log_path).read(),
            )
            assert time.monotonic() < deadline, "the app did not answer within 90s:\n" + open(log_path).read()
            time.sleep(0.2)

        proc = _run(visits, repo_copy, timeout=60)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) == 3, "one JSON answer per line, not:\n" + proc.stdout
        visit, totals, stats = (json.loads(line) for line in lines)
        assert visit["region"] == "US" and visit["total"] >= 1 and isinstance(visit["conn"], int), visit
        assert totals["totals"]["US"] >= visit["total"], (visit, totals)
        assert stats["use_greenlets"] is True, stats  # gunicorn -k gevent patched threading
        assert stats["pool"]["max_size"] == 20 and stats["pool"]["open"] >= 1, stats

        # The main README's Python snippets expect a server on localhost:27017,
        # which the README's own command has just started.
        for snippet in code_blocks(MAIN_README, ("python",)):
            if "count = " in snippet:
                snippet += "\nprint(count)"  # the read that must see the w=0 write
            snippet += "\nconnection.close()\n" if "Connection(" in snippet else "\nclient.close()\n"
            proc = subprocess.run(
                [sys.executable, "-c", snippet],
                cwd=repo_copy,
                env=_env(repo_copy),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, "README snippet failed:\n%s\n%s" % (snippet, proc.stderr)
            if "count = " in snippet:
                assert int(proc.stdout) >= 1, (snippet, proc.stdout)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    # SIGTERM stops the throwaway mongod too (mongo_requests.testing shuts it
    # down cleanly, then removes its data): nothing may be left listening.
    deadline = time.monotonic() + 30
    while not (_port_free(27017) and _port_free(8000)):
        assert time.monotonic() < deadline, "still listening after SIGTERM:\n" + open(log_path).read()
        time.sleep(0.2)
