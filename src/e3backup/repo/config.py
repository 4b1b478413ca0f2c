"""The plaintext `config` object: what a client must know before it can open anything else."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from e3backup.core.errors import E3Error, FormatError, UsageError
from e3backup.repo import formats

ENCRYPTION_SCHEMES = ("aes-256-gcm", "none")
DEFAULT_CHUNK_SIZE = 128 * 1024  # chosen by bench/ (see bench/RESULTS.md, "Default chunk size")


@dataclass(frozen=True)
class RepoConfig:
    format_version: int
    repo_id: str
    chunk_size: int
    encryption: str
    compression_level: int = 3
    id_key: str | None = None  # only for unencrypted repositories (hex)

    def __post_init__(self) -> None:
        validate_chunk_size(self.chunk_size)
        if self.encryption not in ENCRYPTION_SCHEMES:
            raise UsageError(
                f"unknown encryption {self.encryption!r} (choose {', '.join(ENCRYPTION_SCHEMES)})"
            )

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RepoConfig:
        try:
            doc = json.loads(data)
            config = cls(**doc)
        except (ValueError, TypeError, E3Error) as exc:
            raise FormatError(f"repository config is damaged: {exc}") from exc
        if config.format_version != formats.FORMAT_VERSION:
            raise FormatError(
                f"repository format {config.format_version} is not supported by this version "
                f"(supports {formats.FORMAT_VERSION})"
            )
        return config


def validate_chunk_size(chunk_size: int) -> int:
    power_of_two = chunk_size > 0 and chunk_size & (chunk_size - 1) == 0
    if not power_of_two or not formats.MIN_CHUNK_SIZE <= chunk_size <= formats.MAX_CHUNK_SIZE:
        raise UsageError(
            f"chunk size {chunk_size} must be a power of two between "
            f"{formats.MIN_CHUNK_SIZE // 1024} KiB and {formats.MAX_CHUNK_SIZE // 1048576} MiB"
        )
    return chunk_size
