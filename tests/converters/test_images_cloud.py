"""``syncd convert --download-images`` fetching ``s3://`` images through syncd's S3 store (moto server)."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from converters.images import ImageFetcher
from syncd.stores.fetch import CloudReader
from tests.converters_helpers import run
from tests.servers import apply_env, get_service, s3_service_fixture  # noqa: F401  (pytest fixture)

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Car"/><Label value="Pedestrian"/></RectangleLabels>
</View>
"""


def png(width: int, height: int) -> bytes:
    """A small RGB PNG."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes([200, y * 30 % 256, 128]) * width for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def task(task_id: int, image: str) -> dict:
    box = {"x": 10.0, "y": 20.0, "width": 50.0, "height": 40.0, "rotation": 0, "rectanglelabels": ["Car"]}
    return {"id": task_id, "data": {"image": image}, "annotations": [{
        "id": task_id, "completed_by": 1, "was_cancelled": False,
        "result": [{"id": f"r{task_id}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                    "original_width": 1, "original_height": 1, "image_rotation": 0, "value": box}]}]}


@pytest.fixture
def s3_bucket(request, monkeypatch):
    """A new moto bucket, with the environment an option-less S3 store needs (AWS_ENDPOINT_URL)."""
    service = get_service(request, "s3")
    bucket = service.new_bucket()
    _, _, env = service.target(bucket)
    env["AWS_ENDPOINT_URL"] = service.endpoint
    apply_env(monkeypatch, env)
    return service, bucket


def test_download_images_from_s3_to_coco(tmp_path, capsys, s3_bucket):
    service, bucket = s3_bucket
    image = png(37, 23)
    service.put_foreign(bucket, "img.png", image)
    service.put_foreign(bucket, "nested/dir/other.png", png(5, 9))
    tasks = [task(1, f"s3://{bucket}/img.png"), task(2, f"s3://{bucket}/nested/dir/other.png"),
             task(3, f"s3://{bucket}/missing.png")]
    (tmp_path / "in.json").write_text(json.dumps(tasks), encoding="utf-8")
    (tmp_path / "config.xml").write_text(LABEL_CONFIG, encoding="utf-8")

    rc = run(["convert", str(tmp_path / "in.json"), "-f", "COCO", "--label-config", str(tmp_path / "config.xml"),
              "--out", str(tmp_path / "out"), "--download-images"])
    assert rc == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err  # one line per image that failed
    assert err[0].startswith("warning: task 3: image s3://") and "not downloaded: no such object" in err[0]

    assert (tmp_path / "out" / "images" / "img.png").read_bytes() == image
    assert (tmp_path / "out" / "images" / "other.png").read_bytes() == png(5, 9)
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["img.png", "other.png"]
    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    sizes = {m["file_name"].rsplit("/", 1)[-1]: (m["width"], m["height"]) for m in result["images"]}
    assert sizes["img.png"] == (37, 23)
    assert sizes["other.png"] == (5, 9)


def test_one_store_per_bucket_and_errors_are_one_line(tmp_path, s3_bucket):
    service, bucket = s3_bucket
    service.put_foreign(bucket, "a.png", png(2, 3))
    service.put_foreign(bucket, "b.png", png(4, 5))
    reader = CloudReader()
    with ImageFetcher(tmp_path / "images", workers=2, read_cloud=reader) as fetcher:
        a = fetcher.fetch(f"s3://{bucket}/a.png").result()
        b = fetcher.fetch(f"s3://{bucket}/b.png").result()
        assert (a.width, a.height, b.width, b.height) == (2, 3, 4, 5)
        assert list(reader._stores) == [f"s3://{bucket}"]
        with pytest.raises(Exception) as missing_bucket:
            fetcher.fetch("s3://no-such-bucket-syncd/x.png").result()
        assert "no-such-bucket-syncd" in str(missing_bucket.value) and "\n" not in str(missing_bucket.value)
        with pytest.raises(Exception, match="bucket and an object"):
            fetcher.fetch(f"s3://{bucket}").result()


def test_azure_blob_uri_without_credentials_fails_with_a_warning(tmp_path, monkeypatch):
    pytest.importorskip("azure.storage.blob")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with ImageFetcher(tmp_path / "images", workers=1, read_cloud=CloudReader()) as fetcher:
        with pytest.raises(Exception) as err:
            fetcher.fetch("azure-blob://container/img.png").result()
    assert "azure://container" in str(err.value) and "\n" not in str(err.value)


def test_without_a_cloud_reader_cloud_images_fail_with_a_reason(tmp_path):
    with ImageFetcher(tmp_path / "images", workers=1) as fetcher:  # converters alone: no storage adapters
        with pytest.raises(Exception, match="need a reader of cloud storage"):
            fetcher.fetch("s3://bucket/img.png").result()
