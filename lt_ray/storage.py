"""Study storage that is either a local folder or a URI that ``pyarrow.fs`` understands.

A location is a plain path (``runs/study``, ``~/studies``) or a URI with a scheme
(``s3://bucket/prefix``, ``gs://bucket/prefix``, ``file:///abs/path``). Every function takes
either form and goes through ``pyarrow.fs``; no boto3 or fsspec is needed.

Writes are atomic: a local file is written to a temp file in the same folder and renamed over
the target with ``os.replace``; an object store gets the whole payload in one upload, and an
object only becomes visible once its upload completes. Readers therefore never see half a file.

S3-compatible stores (MinIO, Ceph, moto, ...) are configured with the standard AWS environment
variables: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` (or
``AWS_REGION``) and ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, e.g.
``http://127.0.0.1:9000``. ``pyarrow.fs.FileSystem.from_uri`` reads both endpoint variables by
itself (Arrow >= 13 for ``AWS_ENDPOINT_URL``, >= 15 for ``AWS_ENDPOINT_URL_S3``; checked with
pyarrow 26.0.1), so no ``endpoint_override`` is passed here. Note that constructing
``pyarrow.fs.S3FileSystem()`` directly does *not* read them, which is why :func:`filesystem`
always goes through ``from_uri``. A URI may also carry pyarrow options as a query string,
e.g. ``s3://bucket/prefix?endpoint_override=http://host:9000&region=us-east-1``.

Errors: reading something that does not exist raises :class:`FileNotFoundError` whose message
names the location; other I/O failures (bad credentials, unreachable endpoint, missing bucket)
raise :class:`OSError` naming the operation and the location, with pyarrow's detail appended.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lt_ray.errors import LTRayError

Location = str | os.PathLike[str]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_ONE_SLASH = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):/(?!/)")  # s3:/x: a URI missing a slash
NAME_MAX = 255  # bytes of one path component on Linux and macOS file systems
DETAIL_MAX = 400  # characters of a storage library's error message kept in ours
GCS_RETRY_LIMIT_S = 15.0  # how long a gs:// call retries (pyarrow's retry_limit_seconds)


def is_uri(path: Location) -> bool:
    """Whether ``path`` has a scheme such as ``s3://``, ``gs://`` or ``file://``."""
    return bool(_SCHEME.match(os.fspath(path)))


def check_location(location: Location, what: str) -> str:
    """``location`` normalized, if it can be a folder to write into; else an LTRayError naming
    ``what`` (the option) and the fix: a URI missing a slash (``s3:/x``), a scheme pyarrow
    cannot open, a local path below a file or inside a file, or a path component longer than
    the file system allows. Nothing is created."""
    text = os.fspath(location)
    if not text.strip():
        raise LTRayError(f"{what} is empty; give a folder or a URI (s3://bucket/prefix)")
    if "\x00" in text:
        raise LTRayError(f"{what} {text!r} holds a NUL character, which no path may hold")
    one_slash = _ONE_SLASH.match(text)
    if one_slash:
        fixed = f"{one_slash.group(1)}://{text[one_slash.end():]}"
        raise LTRayError(f"{what} {text!r} looks like a URI with one slash; did you mean "
                         f"{fixed!r}? (a local folder name cannot start with 'scheme:/')")
    if is_uri(text):
        try:
            filesystem(text)
        except ValueError:
            scheme = text.split("://", 1)[0]
            raise LTRayError(f"{what} {text!r}: pyarrow cannot open {scheme}:// storage; give "
                             "a folder, s3://bucket/prefix, gs://bucket/prefix or "
                             "file:///path") from None
        except OSError as exc:
            raise LTRayError(f"{what} {text!r}: {exc}") from None
        return normalize(text)
    path = normalize(text)
    for part in path.split(os.sep):
        if len(os.fsencode(part)) > NAME_MAX:
            raise LTRayError(f"{what}: the folder name {part[:40]!r}... is "
                             f"{len(os.fsencode(part))} bytes, more than the {NAME_MAX} a file "
                             "system allows; give a shorter name")
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe) if os.path.dirname(probe) != probe else ""
    if probe and not os.path.isdir(probe):
        where = "is" if probe == path else f"lies in {probe!r}, which is"
        raise LTRayError(f"{what} {text!r} {where} a file; give a folder")
    return path


def _split_uri(uri: str) -> tuple[str, str, str]:
    """``scheme://``, the rest without the query, and ``?query`` (or ``""``)."""
    head = _SCHEME.match(uri)
    assert head is not None
    rest, sep, query = uri[head.end():].partition("?")
    return head.group(0), rest, sep + query


def normalize(location: Location) -> str:
    """An absolute, user-expanded local path, or the URI without trailing slashes."""
    location = os.fspath(location)
    if not is_uri(location):
        return os.path.abspath(os.path.expanduser(location))
    scheme, rest, query = _split_uri(location)
    stripped = rest.rstrip("/")
    if not stripped and rest.startswith("/"):
        stripped = "/"  # file:/// is the root, keep it
    return scheme + stripped + query


def join(base: Location, *parts: str) -> str:
    """``base`` with ``parts`` appended: ``os.path.join`` for paths, ``/`` for URIs.

    A URI's query string (pyarrow options) stays at the end.
    """
    base = os.fspath(base)
    if not is_uri(base):
        return os.path.join(base, *parts)
    scheme, rest, query = _split_uri(base)
    pieces = [rest.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
    return scheme + "/".join(pieces) + query


def parent(location: Location) -> str:
    """The folder holding ``location`` (a URI keeps its scheme and query string)."""
    location = normalize(location)
    if not is_uri(location):
        return os.path.dirname(location)
    scheme, rest, query = _split_uri(location)
    return scheme + rest.rsplit("/", 1)[0] + query


def filesystem(location: Location) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for ``location`` and the path inside it.

    URIs go through ``FileSystem.from_uri`` (which reads the AWS environment variables, see the
    module docstring); plain paths give a ``LocalFileSystem`` and the normalized absolute path.
    """
    location = normalize(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), location
    scheme, _, query = _split_uri(location)
    if scheme in ("gs://", "gcs://") and "retry_limit_seconds=" not in query:
        # without credentials, Google Cloud Storage retries the token request for minutes:
        # bound it, so a wrong setup fails in seconds (a URI may set its own limit)
        location += ("&" if query else "?") + f"retry_limit_seconds={GCS_RETRY_LIMIT_S:g}"
    try:
        return pafs.FileSystem.from_uri(location)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"unsupported storage location {location!r}: {exc}") from exc
    except OSError as exc:
        raise OSError(f"cannot open storage {location!r}: {exc}") from exc


@contextlib.contextmanager
def _errors(action: str, location: Location) -> Iterator[None]:
    """Re-raise pyarrow/OS errors with a message that names ``location``."""
    shown = normalize(location)
    try:
        yield
    except FileNotFoundError as exc:
        raise FileNotFoundError(errno.ENOENT, f"cannot {action}, no such file", shown) from exc
    except OSError as exc:  # keep IsADirectoryError, PermissionError, ...; pyarrow's as OSError
        cls = type(exc) if type(exc).__module__ == "builtins" else OSError
        detail = str(exc) if len(str(exc)) <= DETAIL_MAX else str(exc)[:DETAIL_MAX] + "..."
        raise cls(f"cannot {action} {shown!r}: {detail}") from exc


def _info(location: Location) -> pafs.FileInfo:
    fs, path = filesystem(location)
    with _errors("inspect", location):
        return fs.get_file_info(path)


def exists(location: Location) -> bool:
    """Whether a file, folder or (for object stores) a non-empty prefix is at ``location``."""
    return _info(location).type != pafs.FileType.NotFound


def is_file(location: Location) -> bool:
    """Whether ``location`` is a regular file or object."""
    return _info(location).type == pafs.FileType.File


def makedirs(location: Location) -> None:
    """Create the folder and its parents (an empty prefix marker on object stores)."""
    fs, path = filesystem(location)
    with _errors("create folder", location):
        fs.create_dir(path, recursive=True)


def list_names(location: Location) -> list[str]:
    """Sorted names of the immediate children of ``location``; ``[]`` if it does not exist."""
    fs, path = filesystem(location)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    with _errors("list", location):
        infos = fs.get_file_info(selector)
    return sorted(info.base_name for info in infos)


def remove_tree(location: Location) -> None:
    """Delete the file or folder at ``location`` with all its contents; absent is fine.

    A bare bucket (``s3://bucket``) is emptied, never deleted.
    """
    fs, path = filesystem(location)
    with _errors("remove", location):
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            return
        if kind == pafs.FileType.File:
            fs.delete_file(path)
        elif is_uri(location) and "/" not in path.strip("/"):
            fs.delete_dir_contents(path, missing_dir_ok=True)
        else:
            fs.delete_dir(path)


def read_bytes(location: Location) -> bytes:
    """The whole content of the file at ``location``."""
    fs, path = filesystem(location)
    with _errors("read", location):
        with fs.open_input_stream(path) as stream:
            return stream.read()


def read_text(location: Location) -> str:
    """The UTF-8 text of the file at ``location``."""
    return read_bytes(location).decode("utf-8")


def write_bytes(location: Location, data: bytes | bytearray | memoryview | pa.Buffer) -> None:
    """Atomically replace the file at ``location`` with ``data`` (creating local parents)."""
    fs, path = filesystem(location)
    if isinstance(fs, pafs.LocalFileSystem):
        with _errors("write", location):
            _write_local_atomic(path, data)
        return
    with _errors("write", location):
        # One write of the complete payload: S3-like stores publish an object only when its
        # upload completes (pyarrow 26 uses a multipart upload even for small objects).
        with fs.open_output_stream(path) as stream:
            stream.write(data)


def _write_local_atomic(path: str, data: bytes | bytearray | memoryview | pa.Buffer) -> None:
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 keeps the usual umask-based permissions (mkstemp would give 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(location: Location, text: str) -> None:
    """Atomically replace the file at ``location`` with ``text`` encoded as UTF-8."""
    write_bytes(location, text.encode("utf-8"))


def write_parquet(table: pa.Table, location: Location, **kwargs: Any) -> None:
    """Atomically write ``table`` as one Parquet file; ``kwargs`` go to ``pq.write_table``."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **kwargs)
    write_bytes(location, sink.getvalue())


def read_parquet(location: Location, columns: list[str] | None = None) -> pa.Table:
    """The Parquet file at ``location`` as a table (optionally only ``columns``)."""
    data = read_bytes(location)
    with _errors("read Parquet", location):
        return pq.read_table(pa.BufferReader(data), columns=columns)
