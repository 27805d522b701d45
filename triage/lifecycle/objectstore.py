"""A registry location (a directory or ``s3://bucket/prefix``) and the few S3 calls a registry needs.

Endpoint, region and credentials come from boto3's standard chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``~/.aws/config``), so the same
command works on AWS, GCS's S3 interface, MinIO and SeaweedFS. Writes that must not race use
S3's conditional writes: ``If-None-Match: *`` creates an object only if it is absent,
``If-Match: <etag>`` replaces it only if nobody changed it since it was read.

Failures: an unreachable or overloaded store (connection refused or reset, timeouts, 5xx, 429)
is ``ObjectStoreUnavailableError``, retriable (the world's fault: ``errors.blame``); a refusal
(no such bucket, access denied, no credentials) is a ``RegistryError`` that says what to fix.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from triage.errors import ConfigError, ObjectStoreUnavailableError, RegistryError
from triage.extras import require_extra

# A URL scheme (two letters or more, so a Windows drive letter is still a path).
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_S3 = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                      "RequestTimeTooSkewed"}
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}
_CONFLICT_RETRIES = 4  # 409s sent again, 0.1 s to 0.8 s apart
WRITE_ID = "triage-write-id"  # user metadata: which conditional write put the object


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative


def parse_location(value: str) -> Optional[S3Location]:
    """``s3://bucket/prefix`` -> S3Location; a plain path -> None; anything else with a URL
    scheme -> ConfigError (so ``s3://...`` can never become a local directory named ``s3:``)."""
    m = _SCHEME.match(value)
    if m is None:
        return None
    if m.group(1).lower() != "s3":
        raise ConfigError(f"registry {value!r}: unsupported scheme {m.group(1)!r}; use a directory or "
                          "s3://bucket/prefix (S3, GCS's S3 interface, MinIO, SeaweedFS: AWS_ENDPOINT_URL)")
    s3 = _S3.match(value)
    if s3 is None:
        raise ConfigError(f"registry {value!r} is not s3://bucket[/prefix] (bucket: 3-63 lowercase letters, "
                          "digits, dots or hyphens)")
    prefix = (s3.group(2) or "").strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(f"registry {value!r}: the prefix has an empty, '.' or '..' part")
    return S3Location(s3.group(1), prefix)


def _client() -> Any:
    require_extra("s3", "an s3:// registry")
    import boto3
    from botocore.config import Config

    # Bounded calls: an unreachable store fails within seconds, as a retriable error, rather
    # than stalling a loop. Checksums only where S3 requires them: some S3-compatible servers
    # refuse the newer default trailers.
    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return boto3.session.Session().client("s3", config=config)


class ObjectStore:
    """The S3 calls of one registry location, with errors mapped as the module doc says."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self._s3 = _client()
        import botocore.exceptions as bx

        self._bx = bx

    def _fail(self, exc: Exception, what: str) -> Exception:
        bx = self._bx
        where = f"{self.location}: {what}"
        if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
            return ObjectStoreUnavailableError(where, str(exc))
        if isinstance(exc, bx.NoCredentialsError):
            return RegistryError(f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                 "or an AWS profile)")
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status >= 500 or status == 429 or code in _UNAVAILABLE_CODES:
                return ObjectStoreUnavailableError(where, f"{code or status}: {err.get('Message', '')}")
            if code == "NoSuchBucket":
                return RegistryError(f"{where}: bucket {self.location.bucket!r} does not exist (create it, or check "
                                     "AWS_ENDPOINT_URL)")
            return RegistryError(f"{where}: {code or status}: {err.get('Message', '')}")
        if isinstance(exc, bx.BotoCoreError):
            return RegistryError(f"{where}: {exc}")
        return exc

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def get(self, relative: str) -> Optional[tuple[bytes, str]]:
        """(bytes, etag) of an object, or None when it does not exist."""
        try:
            r = self._s3.get_object(Bucket=self.location.bucket, Key=self.location.key(relative))
            return r["Body"].read(), str(r["ETag"])
        except Exception as exc:  # noqa: BLE001 - mapped below
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._fail(exc, f"cannot read {relative}") from None

    def put(self, relative: str, data: bytes) -> None:
        """Write (or replace) an object; S3 makes the new bytes visible all at once."""
        try:
            self._s3.put_object(Bucket=self.location.bucket, Key=self.location.key(relative), Body=data)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"cannot write {relative}") from None

    def create(self, relative: str, data: bytes) -> bool:
        """Write an object only if it does not exist (``If-None-Match: *``); False if it does."""
        return self._conditional(relative, data, IfNoneMatch="*")

    def replace(self, relative: str, data: bytes, etag: str) -> bool:
        """Replace an object only if its ETag is still ``etag`` (``If-Match``); False if it changed."""
        return self._conditional(relative, data, IfMatch=etag)

    def _conditional(self, relative: str, data: bytes, **condition: str) -> bool:
        """False when another write holds the object. The client retries a PUT whose answer was
        lost (a timeout, a 5xx), and the retry of one that landed fails its own condition: so
        each write carries its own id (user metadata), and a failed condition whose object
        carries ours was this write. A 409 (another conditional write to the key in flight,
        maybe this one's first try) is sent again, as S3 advises, before anything is judged."""
        mine = uuid.uuid4().hex
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                self._s3.put_object(Bucket=self.location.bucket, Key=self.location.key(relative), Body=data,
                                    Metadata={WRITE_ID: mine}, **condition)
                return True
            except Exception as exc:  # noqa: BLE001
                code = self._code(exc)
                if code not in _CONFLICT:
                    raise self._fail(exc, f"cannot write {relative}") from None
                if code != "ConditionalRequestConflict" or attempt == _CONFLICT_RETRIES:
                    break
                time.sleep(0.1 * 2 ** attempt)
        return self._written_by(relative, mine)

    def _written_by(self, relative: str, write_id: str) -> bool:
        try:
            head = self._s3.head_object(Bucket=self.location.bucket, Key=self.location.key(relative))
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._fail(exc, f"cannot read {relative}") from None
        return bool(head.get("Metadata", {}).get(WRITE_ID) == write_id)

    def keys(self, relative_prefix: str) -> Iterator[str]:
        """Relative keys under ``relative_prefix``, in lexicographic order."""
        return (key for key, _ in self.listing(relative_prefix))

    def listing(self, relative_prefix: str) -> Iterator[tuple[str, str]]:
        """(relative key, ETag) of each object under ``relative_prefix``, in lexicographic order."""
        base = self.location.key("")
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=self.location.key(relative_prefix))
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield str(obj["Key"])[len(base):], str(obj.get("ETag", ""))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"cannot list {relative_prefix or '/'}") from None

    def delete(self, relative: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.location.bucket, Key=self.location.key(relative))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"cannot delete {relative}") from None

    def check_bucket(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.location.bucket)
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) in ("404", "NoSuchBucket"):
                raise RegistryError(f"{self.location}: bucket {self.location.bucket!r} does not exist (create it, "
                                    "or check AWS_ENDPOINT_URL)") from None
            raise self._fail(exc, "cannot reach the bucket") from None
