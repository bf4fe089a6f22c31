"""`stt transcribe|jobs|models|health`: the command line of a running service, over HTTP.

Files go up concurrently (threads, one connection each); bars (rich) only when stdout is a
terminal, plain lines or JSON lines otherwise. Exit status 1 when any file failed, with one line
per failure on stderr; 2 when the service cannot be reached or refuses the call.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from serve_app.core.bounds import MAX_SPEAKERS, PAGE_LIMIT, STATUSES
from serve_app.core.formats import BY_EXTENSION
from serve_app.core.transcript import Task

DEFAULT_URL = "http://127.0.0.1:8000"
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=None)  # a long recording's sync answer takes as long as it takes


class Failed(Exception):
    """One file or call that did not work, said in one line."""


def reason(response: httpx.Response) -> str:
    """The service's error (``code: message``), or the status when the body is not ours."""
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"
    except Exception:
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()


@dataclass
class Remote:
    url: str
    api_key: str | None
    as_json: bool = False

    def client(self, timeout: httpx.Timeout | float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        with self.client() as client:
            return checked(lambda: client.request(method, path, **kw), self.url)


def checked(send, url: str) -> httpx.Response:
    try:
        response = send()
    except httpx.TransportError as exc:
        raise Failed(f"cannot reach the service at {url} ({exc.__class__.__name__}: {exc})") from None
    if response.is_error:
        raise Failed(reason(response))
    return response


@dataclass
class Outcome:
    input: str
    status: str  # done, skipped or failed
    output: str | None = None
    job_id: str | None = None
    error: str | None = None


class Bars:
    """Rich's bars, one per file and one overall; nothing at all when stdout is not a terminal."""

    def __init__(self, files: int, shown: bool):
        self.progress = None
        if shown:
            self.progress = Progress(
                TextColumn("{task.description}", justify="left"),
                BarColumn(),
                TaskProgressColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.overall = self.progress.add_task("[bold]all files", total=files)

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def file(self, name: str, size: int):
        return self.progress.add_task(f"{name} [dim]upload", total=size) if self.progress else None

    def update(self, task, **kw) -> None:
        if self.progress and task is not None:
            self.progress.update(task, **kw)

    def finished(self) -> None:
        if self.progress:
            self.progress.advance(self.overall)


class Counted:
    """An open file that tells a bar how much of it has been read (sent)."""

    def __init__(self, handle, on_read):
        self.handle, self.on_read = handle, on_read

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.on_read(len(data))
        return data

    def __getattr__(self, name):  # seek, tell, fileno: httpx measures the file with them
        return getattr(self.handle, name)


def target_path(source: Path, fmt: str, out: Path | None) -> Path:
    return (out or source.parent) / f"{source.stem}.{fmt}"


class Transcribe:
    def __init__(self, remote: Remote, fields: dict, fmt: str, out: Path | None, force: bool, asynchronous: bool):
        self.remote, self.fields, self.fmt, self.out = remote, fields, fmt, out
        self.force, self.asynchronous = force, asynchronous
        self.lock = threading.Lock()

    def run(self, files: list[Path], concurrency: int, bars: Bars) -> list[Outcome]:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(lambda f: self.one(f, bars), files))

    def one(self, source: Path, bars: Bars) -> Outcome:
        target = target_path(source, self.fmt, self.out)
        if target.exists() and not self.force:
            bars.finished()
            return Outcome(str(source), "skipped", str(target), error="output exists (--force overwrites it)")
        try:
            job_id, body = self.send(source, bars)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            return Outcome(str(source), "done", str(target), job_id)
        except (Failed, OSError) as exc:
            return Outcome(str(source), "failed", job_id=None, error=str(exc))
        finally:
            bars.finished()

    def send(self, source: Path, bars: Bars) -> tuple[str | None, bytes]:
        with open(source, "rb") as handle, self.remote.client(UPLOAD_TIMEOUT) as client:
            size = os.fstat(handle.fileno()).st_size
            task = bars.file(source.name, size)
            counted = Counted(handle, lambda n: bars.update(task, advance=n))
            data = self.fields | {"sync": "false" if self.asynchronous else "true"}
            if not self.asynchronous:
                data["response_format"] = BY_EXTENSION[self.fmt]
            files = {"file": (source.name, counted, "application/octet-stream")}
            sent = self._post(client, data, files, task, bars)
            if not self.asynchronous:
                return sent.headers.get("x-request-id"), sent.content
            job_id = sent.json()["id"]
            self.follow(client, job_id, source.name, task, bars)
            download = checked(
                lambda: client.get(f"/api/v1/transcriptions/{job_id}/download", params={"format": self.fmt}),
                self.remote.url,
            )
            return job_id, download.content

    def _post(self, client: httpx.Client, data: dict, files: dict, task, bars: Bars) -> httpx.Response:
        def post():
            with client.stream("POST", "/api/v1/transcriptions", data=data, files=files) as response:
                bars.update(task, description=f"{files['file'][0]} [dim]transcribing", total=None)
                response.read()
                return response

        return checked(post, self.remote.url)

    def follow(self, client: httpx.Client, job_id: str, name: str, task, bars: Bars) -> None:
        """The job's events until it ends; the bar shows the fraction transcribed."""
        bars.update(task, description=f"{name} [dim]queued", total=1000, completed=0)
        with client.stream("GET", f"/api/v1/transcriptions/{job_id}/events") as events:
            if events.is_error:
                events.read()
                raise Failed(reason(events))
            kind = None
            for line in events.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    body = json.loads(line[6:])
                    if kind == "progress" and body.get("status") == "PROCESSING":
                        done = int(1000 * (body.get("progress") or 0))
                        bars.update(task, description=f"{name} [dim]transcribing", completed=done)
                    elif kind == "completed":
                        bars.update(task, completed=1000)
                        return
                    elif kind in ("failed", "error"):
                        raise Failed(body.get("error") or "the job failed")
        raise Failed(f"the events of job {job_id} ended before it did")


# -- the commands ------------------------------------------------------------------------------
url_option = click.option("--url", envvar="STT_URL", default=DEFAULT_URL, show_default=True, help="The service.")
key_option = click.option("--api-key", envvar="STT_API_KEY", help="An API key (or STT_API_KEY).")
json_option = click.option("--json", "as_json", is_flag=True, help="JSON output (one object per line for files).")


def remote_options(command):
    return url_option(key_option(json_option(command)))


def emit(remote: Remote, data, plain: str | None = None) -> None:
    click.echo(json.dumps(data, default=str) if remote.as_json else (plain if plain is not None else data))


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", help="A served model, or auto (default: the service's default).")
@click.option("--language", help="Language code (default: detected).")
@click.option("--task", type=click.Choice(get_args(Task)), default="transcribe", show_default=True)
@click.option("--format", "fmt", type=click.Choice(list(BY_EXTENSION)), default="srt", show_default=True)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Write outputs here (default: beside each input)."
)
@click.option("--async", "asynchronous", is_flag=True, help="Submit jobs and follow them (kept for later download).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Files at once.")
@click.option("--word-timestamps", is_flag=True, help="Word times (json output shows them).")
@click.option("--diarize", is_flag=True, help="Who spoke when: each segment gets its speaker.")
@click.option(
    "--min-speakers", type=click.IntRange(1, MAX_SPEAKERS), help="With --diarize: at least this many speakers."
)
@click.option(
    "--max-speakers", type=click.IntRange(1, MAX_SPEAKERS), help="With --diarize: at most this many speakers."
)
@click.option("--force", is_flag=True, help="Overwrite outputs that exist (default: skip their inputs).")
@remote_options
def transcribe(files, model, language, task, fmt, out, asynchronous, concurrency, word_timestamps, force, **kw):
    """Transcribe FILES, writing one output per input (talk.mp3 -> talk.srt)."""
    remote = Remote(kw["url"], kw["api_key"], kw["as_json"])
    fields = {"task": task, "word_timestamps": str(word_timestamps).lower()}
    fields |= {k: v for k, v in (("model", model), ("language", language)) if v}
    if kw["diarize"]:
        fields["diarize"] = "true"
        fields |= {k: str(kw[k]) for k in ("min_speakers", "max_speakers") if kw[k]}
    job = Transcribe(remote, fields, fmt, out, force, asynchronous)
    shown = sys.stdout.isatty() and not remote.as_json
    with Bars(len(files), shown) as bars:
        outcomes = job.run(list(files), concurrency, bars)
    for o in outcomes:
        if remote.as_json:
            click.echo(json.dumps({k: v for k, v in asdict(o).items() if v is not None}))
        elif o.status == "done":
            click.echo(f"{o.input} -> {o.output}")
        elif o.status == "skipped":
            click.echo(f"{o.input}: skipped, {o.output} exists (--force overwrites it)", err=True)
    for o in outcomes:
        if o.status == "failed":
            click.echo(f"stt: {o.input}: {o.error}", err=True)
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        click.echo(f"stt: {failed} of {len(outcomes)} files failed", err=True)
        sys.exit(1)


@click.group()
def jobs() -> None:
    """List, show, download and delete transcription jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--search", "q", help="Words in the file name.")
@click.option("--limit", type=click.IntRange(1, PAGE_LIMIT), default=20, show_default=True)
@remote_options
def jobs_list(status, q, limit, **kw):
    remote = Remote(kw["url"], kw["api_key"], kw["as_json"])
    params = {"limit": limit} | {k: v for k, v in (("status", status), ("q", q)) if v}
    page = remote.call("GET", "/api/v1/transcriptions", params=params).json()
    if remote.as_json:
        return emit(remote, page)
    table = Table("id", "status", "file", "model", "duration", "created", box=None)
    for j in page["items"]:
        duration = f"{j['duration']:.1f}s" if j.get("duration") else ""
        table.add_row(j["id"], j["status"], j["filename"], j["model"], duration, j["created_at"][:19])
    Console(soft_wrap=True).print(table)


@jobs.command("show")
@click.argument("job_id")
@remote_options
def jobs_show(job_id, **kw):
    remote = Remote(kw["url"], kw["api_key"], kw["as_json"])
    job = remote.call("GET", f"/api/v1/transcriptions/{job_id}").json()
    if remote.as_json:
        return emit(remote, job)
    for key in ("id", "status", "filename", "model", "language", "duration", "error", "created_at", "completed_at"):
        if job.get(key) is not None:
            click.echo(f"{key + ':':<14}{job[key]}")
    if job.get("result"):
        click.echo("\n" + job["result"]["text"].strip())


@jobs.command("download")
@click.argument("job_id")
@click.option("--format", "fmt", type=click.Choice(list(BY_EXTENSION)), default="txt", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
@remote_options
def jobs_download(job_id, fmt, output, **kw):
    remote = Remote(kw["url"], kw["api_key"], kw["as_json"])
    body = remote.call("GET", f"/api/v1/transcriptions/{job_id}/download", params={"format": fmt}).content
    if output:
        output.write_bytes(body)
    else:
        click.echo(body.decode(), nl=False)


@jobs.command("delete")
@click.argument("job_ids", nargs=-1, required=True)
@remote_options
def jobs_delete(job_ids, **kw):
    remote = Remote(kw["url"], kw["api_key"], kw["as_json"])
    for job_id in job_ids:
        remote.call("DELETE", f"/api/v1/transcriptions/{job_id}")
        emit(remote, {"deleted": job_id}, f"deleted {job_id}")


@click.command()
@remote_options
def models(**kw):
    """The models the service serves."""
    remote = Remote(kw["url"], kw["api_key"], kw["as_json"])
    found = remote.call("GET", "/api/v1/models").json()["models"]
    if remote.as_json:
        return emit(remote, found)
    table = Table("model", "languages", "tasks", "device", "default", box=None)
    for m in found:
        languages = "multilingual" if m["multilingual"] else ", ".join(m["languages"])
        table.add_row(m["id"], languages, ", ".join(m["tasks"]), m["device"], "yes" if m["default"] else "")
    Console(soft_wrap=True).print(table)


@click.command()
@remote_options
def health(**kw):
    """The service's health; exit status 1 unless it is ok."""
    remote = Remote(kw["url"], kw["api_key"], kw["as_json"])
    body = remote.call("GET", "/api/v1/health").json()
    plain = " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in body.items())
    emit(remote, body, plain)
    if body.get("status") != "ok":
        sys.exit(1)
