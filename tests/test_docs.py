"""Every Python example of README.md and docs/*.md runs here: one test per page.

How a page runs (docs/CONTRIBUTING.md says the same for writers):

- Its ```python blocks run in order, in one namespace (``__main__``), in a
  fresh Python process whose current folder is a fresh empty folder, first on
  ``sys.path``: ``Minique("app.db")`` makes its file there, and a later block
  uses the names of an earlier one.
- ``<!-- file: PATH -->`` on the line before a block writes the block to PATH in
  that folder instead of running it (any language); later blocks import it.
  ``<!-- file: PATH`` then the file's lines then ``-->`` writes a file the page
  needs but does not show (a whole settings.py, say). Keep those rare.
- ``<!-- consumer: ARGS -->``: from the next block that runs to the end of the
  page, ``minique consume ARGS`` runs in the page's folder. It must start, and
  exit with status 0 on SIGTERM at the end.
- ``<!-- pytest: PATH -->`` on the line before a block writes it to PATH and
  runs pytest on it there; its tests must pass.
- ``<!-- skip: REASON -->`` on the line before a block: it does not run (a
  fragment of a settings.py). Rare, and always with a reason.
- ``print(...)  # -> TEXT`` checks what that print writes. A ```text block right
  after a python block is everything that block writes to stdout. In both,
  ``...`` stands for any text.
- sh and console blocks do not run, but each ``minique ...`` command in them
  (and in blocks without a language) must be accepted by minique's parser.

A failure names the page and the markdown line: tracebacks point into the
page itself. Run as ``python -c`` (see ``_BOOTSTRAP``), this file is also the
runner inside that fresh process.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import tokenize
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = ("python", "py", "python3")
SHELL = ("sh", "bash", "console", "shell", "")
PAGE_TIMEOUT = 120.0  # seconds for one whole page; a page takes a second or two

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)\s*$")
_MARK = re.compile(r"^\s*<!--\s*(?P<name>[a-z]+):\s*(?P<value>.*?)\s*(?P<end>-->)?\s*$")
_MARKS = ("file", "consumer", "pytest", "skip")
_CLAIM = re.compile(r"#\s*->\s?(?P<text>.*)$")


class PageError(AssertionError):
    """A page failed one of the runner's checks; the message says where and why."""


@dataclass
class Step:
    """One thing the runner does, in page order."""

    kind: str  # "run", "file", "pytest" or "consumer"
    line: int  # the markdown line of the block's first line (or of the marker)
    code: str = ""  # the block's text, dedented
    path: str = ""  # for "file" and "pytest"
    args: list[str] = field(default_factory=list)  # for "consumer"
    stdout: str | None = None  # for "run": what a following ```text block says it prints


@dataclass
class Block:
    lang: str
    line: int  # of its first line of code
    code: str


def parse_page(page: Path) -> tuple[list[Step], list[Block]]:
    """The steps of a page, and its shell blocks; ``ValueError`` for a misplaced marker."""
    lines = page.read_text().splitlines()
    steps: list[Step] = []
    shell: list[Block] = []
    pending: tuple[str, str, int] | None = None  # a marker waiting for its block
    last_run: Step | None = None  # the run step a ```text block right after would belong to
    where = _rel(page)
    i = 0
    while i < len(lines):
        text = lines[i]
        number = i + 1
        fence = _FENCE.match(text)
        if fence:
            block, i = _read_block(lines, i, fence)
            kind, value = (pending[0], pending[1]) if pending else ("", "")
            pending = None
            follows_run, last_run = last_run, None
            if block.lang == "text" and follows_run is not None and not kind:
                follows_run.stdout = block.code
            elif kind in ("file", "pytest"):
                steps.append(Step(kind, block.line, block.code, path=value))
            elif kind == "skip" or block.lang not in PYTHON:
                if block.lang in SHELL and not kind:
                    shell.append(block)
            else:
                last_run = Step("run", block.line, block.code)
                steps.append(last_run)
            continue
        mark = _MARK.match(text)
        if mark:
            name, value = mark["name"], mark["value"]
            if name not in _MARKS:
                raise ValueError(f"{where}:{number}: unknown marker <!-- {name}: -->; the "
                                 f"markers are {', '.join(_MARKS)} (see tests/test_docs.py)")
            if pending:
                raise ValueError(f"{where}:{pending[2]}: marker not followed by a block")
            if not value:
                raise ValueError(f"{where}:{number}: <!-- {name}: --> needs a value")
            if not mark["end"] and name != "file":
                raise ValueError(f"{where}:{number}: end <!-- {name}: ... --> on its line")
            if not mark["end"]:  # a hidden file, up to the closing -->
                end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->"),
                           None)
                if end is None:
                    raise ValueError(f"{where}:{number}: hidden file {value} has no closing -->")
                body = textwrap.dedent("\n".join(lines[i + 1:end])) + "\n"
                steps.append(Step("file", number + 1, body, path=value))
                i = end + 1
                continue
            if name == "consumer":
                steps.append(Step("consumer", number, args=shlex.split(value)))
            else:
                pending = (name, value, number)
        elif text.strip():
            if pending:
                raise ValueError(f"{where}:{pending[2]}: marker not followed by a block")
            last_run = None
        i += 1
    if pending:
        raise ValueError(f"{where}:{pending[2]}: marker not followed by a block")
    return steps, shell


def _read_block(lines: list[str], start: int, fence: re.Match[str]) -> tuple[Block, int]:
    indent, mark = len(fence["indent"]), fence["fence"]
    end = start + 1
    while end < len(lines) and lines[end].strip() != mark:
        end += 1
    body = [line[indent:] if line[:indent].strip() == "" else line
            for line in lines[start + 1:end]]
    return Block(fence["lang"].lower(), start + 2, "\n".join(body) + "\n"), end + 1


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


# -- in the test process -------------------------------------------------------


def check_commands(page: Path, blocks: list[Block]) -> None:
    """Each ``minique ...`` command in the shell blocks must parse; synopses are skipped."""
    from minique.cli import build_parser

    for block in blocks:
        for offset, line in enumerate(block.code.splitlines()):
            command = line.strip().removeprefix("$ ")
            words = _minique_words(command)
            if words is None or any(w.startswith(("[", "<")) or w == "..." for w in words):
                continue
            try:
                build_parser().parse_args(words)
            except SystemExit as exc:
                if exc.code:
                    pytest.fail(f"{_rel(page)}:{block.line + offset}: minique does not accept "
                                f"{command!r}", pytrace=False)


def _minique_words(command: str) -> list[str] | None:
    """The arguments after ``minique`` (or ``python -m minique``), up to a pipe; else None."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    if "|" in words:
        words = words[:words.index("|")]
    if words[:1] and Path(words[0]).name == "minique":
        return words[1:]
    if len(words) > 2 and Path(words[0]).name.startswith("python") \
            and words[1:3] == ["-m", "minique"]:
        return words[3:]
    return None


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def check_links(page: Path) -> None:
    """Each relative link leads to a file, and its #anchor to a heading there."""
    for number, line in _prose_lines(page):
        for link in _LINK.finditer(line):
            target = link["target"]
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{_rel(page)}:{number}: the link to {target}"
            if not file.exists():
                pytest.fail(f"{where} leads nowhere", pytrace=False)
            if anchor and file.suffix == ".md" and anchor not in _anchors(file):
                pytest.fail(f"{where}: {_rel(file)} has no heading with that anchor",
                            pytrace=False)


def _prose_lines(page: Path) -> Iterator[tuple[int, str]]:
    fence = None
    for number, line in enumerate(page.read_text().splitlines(), 1):
        match = _FENCE.match(line)
        if match and (fence is None or line.strip() == fence):
            fence = match["fence"] if fence is None else None
        elif fence is None:
            yield number, line


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, no punctuation, - for spaces."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for _, line in _prose_lines(page) if line.startswith("#")}


_BOOTSTRAP = (
    "import importlib.util, sys; "
    "spec = importlib.util.spec_from_file_location('docs_runner', sys.argv[1]); "
    "runner = sys.modules['docs_runner'] = importlib.util.module_from_spec(spec); "
    "spec.loader.exec_module(runner); "
    "sys.exit(runner.run_page(sys.argv[2]))"
)


def run_steps(page: Path, steps: list[Step], folder: Path) -> None:
    """Run a page's steps in a fresh process in ``folder``; fail the test with its output."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder.parent / f"{folder.name}-steps.json"
    plan.write_text(json.dumps({"page": str(page), "steps": [asdict(s) for s in steps]}))
    env = _child_env(folder)
    # A session of its own, so that a page that hangs is killed with its consumers.
    proc = subprocess.Popen([sys.executable, "-c", _BOOTSTRAP, __file__, str(plan)], cwd=folder,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{_rel(page)} did not finish in {PAGE_TIMEOUT:g} s; its output:\n{output}",
                    pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{_rel(page)} failed; the page's output:\n{output}", pytrace=False)


def _child_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO", "FLASK_", "MINIQUE"))}  # other tests set some
    env["PYTHONPATH"] = str(folder)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_page(page: Path, tmp_path: Path) -> None:
    steps, shell = parse_page(page)
    check_commands(page, shell)
    check_links(page)
    if any(step.kind in ("run", "pytest") for step in steps):
        run_steps(page, steps, tmp_path / "page")


# The runner itself: a page that says something false must fail.


def _write_page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(textwrap.dedent(text))
    return page


def _failure(page: Path, tmp_path: Path) -> str:
    with pytest.raises(pytest.fail.Exception) as failed:
        run_steps(page, parse_page(page)[0], tmp_path / "run")
    return str(failed.value)


def test_a_print_that_prints_something_else_fails_at_its_line(tmp_path: Path) -> None:
    page = _write_page(tmp_path, """\
        ```python
        total = 2 + 2
        print(total)  # -> 5
        ```
        """)
    assert "page.md:3 printed '4'; the docs say '5'" in _failure(page, tmp_path)


def test_a_text_block_is_the_whole_output_of_the_block_before_it(tmp_path: Path) -> None:
    page = _write_page(tmp_path, """\
        ```python
        for word in ("one", "two", "three"):
            print(word)
        ```

        ```text
        one
        ...
        four
        ```
        """)
    assert "the ```text block after it says" in _failure(page, tmp_path)


def test_a_claim_that_is_not_on_a_print_is_refused(tmp_path: Path) -> None:
    page = _write_page(tmp_path, """\
        ```python
        answer = 42  # -> 42
        ```
        """)
    assert "page.md:2: '# ->' ends a line that is not a print" in _failure(page, tmp_path)


@pytest.mark.parametrize("text, error", [
    ("<!-- flie: app.py -->\n", "unknown marker <!-- flie: -->"),
    ("<!-- file: app.py -->\n\nSome text.\n\n```python\nx = 1\n```\n",
     "marker not followed by a block"),
    ("<!-- skip: -->\n```python\nx = 1\n```\n", "needs a value"),
])
def test_a_misplaced_or_unknown_marker_is_refused(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_page(_write_page(tmp_path, text))


def test_a_minique_command_that_minique_refuses_fails_its_page(tmp_path: Path) -> None:
    page = _write_page(tmp_path, """\
        ```sh
        minique consume app.tasks -w 4             # fine
        minique consume app.tasks --workers        # no number
        minique consume TARGET [-w N]              # a synopsis: not checked
        ```
        """)
    with pytest.raises(pytest.fail.Exception, match="page.md:3: minique does not accept"):
        check_commands(page, parse_page(page)[1])


def test_a_consumer_marker_runs_a_consumer_for_the_blocks_after_it(tmp_path: Path) -> None:
    page = _write_page(tmp_path, """\
        <!-- file: jobs.py -->
        ```python
        from minique import Minique

        mq = Minique("jobs.db")


        @mq.task
        def pid():
            import os
            return os.getpid()
        ```

        <!-- consumer: jobs -w 1 -->

        ```python
        import os

        from jobs import pid

        print(pid().get(timeout=10) != os.getpid())  # -> True
        ```
        """)
    run_steps(page, parse_page(page)[0], tmp_path / "run")
    assert "stopped" in (tmp_path / "run" / "consumer-14.log").read_text()


# -- the runner, in the page's own process ---------------------------------------


class _Tee(io.TextIOBase):
    """Writes to the real stdout and keeps a copy, for a block's ```text check."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


def matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is ``expected``, where ``...`` in ``expected`` stands for any text."""
    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())

    parts = [re.escape(part) for part in norm(expected).split("...")]
    return re.fullmatch(".*".join(parts), norm(actual), re.DOTALL) is not None


def _compile(step: Step, page: str) -> Any:
    """The block compiled at its page lines, its ``print(...)  # -> TEXT`` lines checking."""
    source = "\n" * (step.line - 1) + step.code
    tree = ast.parse(source, page)
    claims = {tok.start[0]: m["text"].rstrip()
              for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT and (m := _CLAIM.match(tok.string))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "print" \
                and node.end_lineno in claims:
            expected = claims.pop(node.end_lineno)
            node.value.func = ast.Name("__docs_print__", ast.Load())
            node.value.args[:0] = [ast.Constant(node.lineno), ast.Constant(expected)]
    if claims:
        line = min(claims)
        raise PageError(f"{_rel(Path(page))}:{line}: '# ->' ends a line that is not a "
                        "print(...) call; only prints can claim their output")
    return compile(ast.fix_missing_locations(tree), page, "exec")


def _docs_print(page: str) -> Any:
    def docs_print(line: int, expected: str, *args: Any, sep: str | None = " ",
                   **options: Any) -> None:
        print(*args, sep=sep, **options)
        text = (" " if sep is None else sep).join(map(str, args))
        if not matches(expected, text):
            raise PageError(f"{page}:{line} printed {text!r}; the docs say {expected!r}")
    return docs_print


class _Consumer:
    """``minique consume ARGS`` in the page's folder, its output in a log file."""

    def __init__(self, args: list[str], line: int, env: dict[str, str]) -> None:
        self.what = f"minique consume {shlex.join(args)} (marker at line {line})"
        self.log = Path(f"consumer-{line}.log")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "minique", "consume", *args],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while "started" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise PageError(f"{self.what} did not start:\n{self.output()}")
            time.sleep(0.01)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> str | None:
        """SIGTERM, and wait; what went wrong, if anything."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return f"{self.what} did not stop within 30 s of SIGTERM:\n{self.output()}"
        if code != 0:
            return f"{self.what} exited with status {code}:\n{self.output()}"
        return None


@contextmanager
def _capture() -> Iterator[_Tee]:
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        yield tee
    finally:
        sys.stdout = tee.out


def run_page(plan_file: str) -> int:
    """Run the steps of ``plan_file`` here; 0 if every one passed, else 1 (and say why)."""
    plan = json.loads(Path(plan_file).read_text())
    page = plan["page"]
    where = _rel(Path(page))
    namespace = sys.modules["__main__"].__dict__
    namespace["__docs_print__"] = _docs_print(where)
    env = dict(os.environ)
    consumers: list[_Consumer] = []
    waiting: Step | None = None  # a consumer marker, until the next step that runs
    failure: str | None = None
    step = Step("none", 0)
    try:
        for step in (Step(**s) for s in plan["steps"]):
            if step.kind == "file":
                target = Path(step.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(step.code)
                if target.suffix == ".py":
                    compile(step.code, page, "exec")  # a broken file fails here, not later
                continue
            if step.kind == "consumer":
                waiting = step
                continue
            if waiting is not None:
                consumers.append(_Consumer(waiting.args, waiting.line, env))
                waiting = None
            if step.kind == "pytest":
                _run_pytest(step, env)
                continue
            code = _compile(step, page)
            with _capture() as out:
                exec(code, namespace)
            if step.stdout is not None and not matches(step.stdout, out.copy.getvalue()):
                raise PageError(
                    f"the block at line {step.line} printed:\n{out.copy.getvalue()}\n"
                    f"the ```text block after it says:\n{step.stdout}")
    except PageError as exc:
        failure = f"{where}: {exc}"
    except BaseException as exc:
        # Drop this function's own frame: the traceback starts in the page.
        tb = exc.__traceback__
        lines = traceback.format_exception(type(exc), exc, tb.tb_next if tb else None)
        failure = f"{where}: the {step.kind} step at line {step.line} failed:\n{''.join(lines)}"
    for consumer in consumers:
        problem = consumer.stop()
        if problem and failure is None:
            failure = f"{where}: {problem}"
        elif failure is not None:
            failure += f"\n--- {consumer.what} logged:\n{consumer.output()}"
    sys.stdout.flush()
    if failure is not None:
        print(failure, file=sys.stderr)
        return 1
    return 0


def _run_pytest(step: Step, env: dict[str, str]) -> None:
    target = Path(step.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(step.code)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    if done.returncode != 0:
        raise PageError(f"pytest {target} failed:\n{done.stdout}{done.stderr}")
    with suppress(ValueError):
        sys.stdout.write(done.stdout.strip().splitlines()[-1] + "\n")


# -- the quickstart's install steps ----------------------------------------------

_GIT = """#!/bin/bash
# git clone URL [DIR]: the clone is this checkout, linked
[ "$1" = clone ] || { echo "git stand-in: only clone" >&2; exit 1; }
if [ $# -ge 3 ]; then dest=$3; else dest=$(basename "${2%.git}"); fi
ln -s "$MINIQUE_CHECKOUT" "$dest"
"""
_PYTHON3 = """#!/bin/bash
# python3 -m venv DIR: a venv whose python is this one; anything else runs this python
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin"
    printf '%s\\n' '#!/bin/bash' \\
        'if [ "$1 $2 $3" = "-m pip install" ]; then' \\
        '    shift 3; [ "$1" = -e ] && shift' \\
        '    test -f "${1%%[*}/pyproject.toml" && exit 0' \\
        '    echo "pip stand-in: no pyproject.toml in $1" >&2; exit 1' \\
        'fi' \\
        "exec $REAL_PYTHON \\"\\$@\\"" > "$3/bin/python"
    chmod +x "$3/bin/python"
    exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def test_quickstart_install_leaves_you_in_a_folder_where_minique_imports(tmp_path: Path) -> None:
    """The quickstart's install block, then ``from minique import Minique`` where it ends.

    In a folder that holds the clone ``minique/``, Python takes that folder for
    the package (with an editable install) and the import fails with "cannot
    import name 'Minique' (unknown location)"; the steps must leave the user
    elsewhere. git, venv and pip are stand-ins (no network, seconds not
    minutes): the clone is a link to this checkout, the venv's python is this
    one, and pip checks that the path it is given is the clone.
    """
    install = next(block for block in parse_page(ROOT / "docs" / "quickstart.md")[1]
                   if "git clone" in block.code)
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, script in (("git", _GIT), ("python3", _PYTHON3)):
        (tools / name).write_text(script)
        (tools / name).chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    ended_in = tmp_path / "pwd"
    script = install.code.replace("<this repository>", "https://example.invalid/minique.git")
    env = {**_child_env(home), "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
           "MINIQUE_CHECKOUT": str(ROOT), "REAL_PYTHON": sys.executable}
    subprocess.run(["bash", "-euo", "pipefail", "-c", f'{script}\npwd > "{ended_in}"\n'],
                   cwd=home, env=env, check=True, timeout=60)
    folder = Path(ended_in.read_text().strip())
    del env["PYTHONPATH"]
    done = subprocess.run([".venv/bin/python", "-c", "from minique import Minique; print('ok')"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout == "ok\n", (
        f"after the quickstart's install steps, in {folder}:\n{done.stderr}")
