"""lt_ray.storage on local folders and on s3:// against a real (moto) S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from lt_ray import storage
from s3server import S3Server


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty study location: a local folder or a prefix in a fresh bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3")
    return server.uri("studies/run1")


# --- pure path handling ----------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("s3://bucket/prefix", True),
    ("gs://bucket", True),
    ("file:///tmp/x", True),
    ("hdfs://namenode:8020/x", True),
    ("/tmp/x", False),
    ("relative/dir", False),
    ("~/studies", False),
    ("dir:with/colon", False),
])
def test_is_uri(path: str, expected: bool) -> None:
    assert storage.is_uri(path) is expected
    if not expected:  # pathlib would collapse the // of a URI anyway
        assert storage.is_uri(Path(path)) is False


def test_normalize(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert storage.normalize("runs/a") == str(tmp_path / "runs" / "a")
    assert storage.normalize("runs/a/") == str(tmp_path / "runs" / "a")
    assert storage.normalize("~/s") == str(tmp_path / "home" / "s")
    assert storage.normalize(tmp_path / "x") == str(tmp_path / "x")
    assert storage.normalize("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert storage.normalize("s3://bucket/prefix") == "s3://bucket/prefix"
    assert storage.normalize("s3://b/p/?region=eu-west-1") == "s3://b/p?region=eu-west-1"
    assert storage.normalize("file:///") == "file:///"


def test_join() -> None:
    assert storage.join("s3://bucket/prefix", "study", "trials.parquet") == (
        "s3://bucket/prefix/study/trials.parquet")
    assert storage.join("s3://bucket/prefix/", "/study/", "x") == "s3://bucket/prefix/study/x"
    assert storage.join("s3://bucket", "x") == "s3://bucket/x"
    assert storage.join("s3://b/p?region=us-east-1", "x") == "s3://b/p/x?region=us-east-1"
    assert storage.join("file:///tmp", "a") == "file:///tmp/a"
    assert storage.join("/data/runs", "study", "study.json") == "/data/runs/study/study.json"
    assert storage.join(Path("rel"), "x") == os.path.join("rel", "x")


def test_unknown_scheme_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="nosuchfs://x"):
        storage.filesystem("nosuchfs://x")


# --- the same behaviour on both backends -----------------------------------------------------


def test_text_and_bytes_round_trip(root: str) -> None:
    study = storage.join(root, "study.json")
    payload = json.dumps({"name": "lt-ray", "imb": 100, "note": "ümlaut ✓"})
    storage.write_text(study, payload)
    assert storage.read_text(study) == payload
    storage.write_text(study, "second version")  # overwrite replaces the whole file
    assert storage.read_text(study) == "second version"

    blob = storage.join(root, "sub", "blob.bin")
    data = bytes(range(256)) * 3
    storage.write_bytes(blob, data)
    assert storage.read_bytes(blob) == data


def test_atomic_write_leaves_no_temp_file(root: str) -> None:
    target = storage.join(root, "study.json")
    for i in range(3):
        storage.write_text(target, f"v{i}")
    assert storage.list_names(root) == ["study.json"]
    assert storage.read_text(target) == "v2"


def test_exists_is_file_list_names(root: str) -> None:
    assert not storage.exists(root)
    assert storage.list_names(root) == []
    assert storage.list_names(storage.join(root, "nope", "deeper")) == []

    storage.makedirs(storage.join(root, "cell-a"))
    storage.write_text(storage.join(root, "study.json"), "{}")
    storage.write_text(storage.join(root, "cell-b", "trial_0", "result.json"), "{}")

    assert storage.exists(root) and not storage.is_file(root)
    assert storage.exists(storage.join(root, "cell-a"))
    assert not storage.is_file(storage.join(root, "cell-a"))
    assert storage.is_file(storage.join(root, "study.json"))
    assert not storage.exists(storage.join(root, "missing.json"))
    assert not storage.is_file(storage.join(root, "missing.json"))
    assert storage.list_names(root) == ["cell-a", "cell-b", "study.json"]
    assert storage.list_names(storage.join(root, "cell-b")) == ["trial_0"]
    assert storage.list_names(storage.join(root, "cell-a")) == []


def test_remove_tree(root: str) -> None:
    storage.write_text(storage.join(root, "keep.json"), "1")
    storage.write_text(storage.join(root, "cell", "t0", "a.json"), "2")
    storage.write_text(storage.join(root, "cell", "t1", "b.json"), "3")
    storage.remove_tree(storage.join(root, "cell"))
    assert not storage.exists(storage.join(root, "cell", "t0", "a.json"))
    assert storage.list_names(root) == ["keep.json"]
    storage.remove_tree(storage.join(root, "keep.json"))  # a single file
    assert not storage.exists(storage.join(root, "keep.json"))
    storage.remove_tree(storage.join(root, "never-existed"))  # absent is fine


def test_parquet_round_trip(root: str) -> None:
    table = pa.table({
        "trial_id": ["t0", "t1", "t2"],
        "seed": pa.array([0, 1, 2], pa.int64()),
        "test_acc": [0.5, 0.625, None],
        "hp.lr": [0.1, 0.05, 0.01],
        "ok": [True, False, True],
    })
    target = storage.join(root, "trials.parquet")
    storage.write_parquet(table, target)
    back = storage.read_parquet(target)
    assert back.column_names == table.column_names
    assert back.schema.equals(table.schema)
    assert back.to_pylist() == table.to_pylist()
    assert storage.read_parquet(target, columns=["hp.lr"]).to_pylist() == [
        {"hp.lr": 0.1}, {"hp.lr": 0.05}, {"hp.lr": 0.01}]
    assert storage.list_names(root) == ["trials.parquet"]


def test_missing_file_error_names_the_location(root: str) -> None:
    missing = storage.join(root, "nothing-here", "study.json")
    for read in (storage.read_text, storage.read_bytes, storage.read_parquet):
        with pytest.raises(FileNotFoundError) as info:
            read(missing)
        assert missing in str(info.value)


# --- local specifics -------------------------------------------------------------------------


def test_local_failed_write_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "study.json"
    storage.write_text(target, "old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match=str(target)):
        storage.write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["study.json"]


def test_local_write_keeps_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a" / "study.json"
    storage.write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_file_uri_is_local(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}"
    storage.write_text(storage.join(uri, "x.txt"), "via uri")
    assert (tmp_path / "x.txt").read_text() == "via uri"
    assert storage.list_names(uri) == ["x.txt"]


# --- S3 specifics ----------------------------------------------------------------------------


def _keys(server: S3Server) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=server.bucket).get("Contents",
                                                                                    []))


def test_s3_objects_are_where_expected(s3: S3Server) -> None:
    storage.write_text(s3.uri("runs/study/study.json"), "{}")
    storage.write_parquet(pa.table({"a": [1]}), s3.uri("runs/study/trials.parquet"))
    storage.write_text(s3.uri("runs/study/study.json"), '{"v": 2}')
    assert _keys(s3) == ["runs/study/study.json", "runs/study/trials.parquet"]
    storage.remove_tree(s3.uri("runs/study"))
    assert not storage.exists(s3.uri("runs/study/study.json"))
    assert not [k for k in _keys(s3) if k.startswith("runs/study/")]


def test_s3_missing_bucket_is_an_oserror_naming_the_location(s3: S3Server) -> None:
    location = "s3://lt-ray-no-such-bucket/study/study.json"
    with pytest.raises(OSError, match="lt-ray-no-such-bucket/study/study.json"):
        storage.write_text(location, "{}")
    with pytest.raises(FileNotFoundError, match="lt-ray-no-such-bucket"):
        storage.read_text(location)
    assert storage.list_names("s3://lt-ray-no-such-bucket/study") == []


def test_s3_visible_to_a_subprocess(s3: S3Server) -> None:
    """Child processes (Ray workers, the CLI) inherit the endpoint from the environment."""
    storage.write_text(s3.uri("shared/msg.txt"), "from parent")
    code = ("from lt_ray import storage; import sys; "
            "print(storage.read_text(sys.argv[1])); "
            "storage.write_text(sys.argv[2], 'from child')")
    out = subprocess.run(
        [sys.executable, "-c", code, s3.uri("shared/msg.txt"), s3.uri("shared/reply.txt")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert out.stdout.strip() == "from parent"
    assert storage.read_text(s3.uri("shared/reply.txt")) == "from child"


def test_parent_of_paths_and_uris(tmp_path):
    assert storage.parent(tmp_path / "a" / "b") == str(tmp_path / "a")
    assert storage.parent("s3://bucket/x/y/") == "s3://bucket/x"
    assert storage.parent("s3://bucket/x/y?region=eu") == "s3://bucket/x?region=eu"


@pytest.mark.timeout(120)
def test_gcs_without_credentials_fails_in_seconds_not_minutes(monkeypatch):
    """gs:// without credentials used to retry the token request for minutes (a sweep hung
    over 90 s and ignored Ctrl-C); its retries are bounded by GCS_RETRY_LIMIT_S (set lower
    here to keep the suite fast: unbounded, this call outlives the test's timeout), so the
    first call fails with an OSError naming the location (the sweep turns it into one error
    line)."""
    monkeypatch.setattr(storage, "GCS_RETRY_LIMIT_S", 2.0)
    started = time.monotonic()
    with pytest.raises(OSError, match="gs://lt-ray-no-such-bucket/x"):
        storage.is_file("gs://lt-ray-no-such-bucket/x/study.json")
    assert time.monotonic() - started < 60
    fs, _ = storage.filesystem("gs://b/x?retry_limit_seconds=2")  # a URI's own limit is kept
    assert type(fs).__name__ == "GcsFileSystem"
