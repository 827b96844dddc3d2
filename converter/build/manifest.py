"""Write the build manifest (schema and checks live in runtime.manifest, which Engine.load reads)."""
from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from runtime.manifest import Manifest, SideFile, manifest_path_for, sha256_file, write_manifest_file
from runtime.specs import TensorSpec

from .staging import StagedBuild

log = logging.getLogger(__name__)


def qdq_version() -> str:
    try:
        return metadata.version("qdq")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_manifest(target: str, artifact: Path, source: Path, staged: StagedBuild,
                   inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> Path:
    """Hash ``artifact`` (and its side files, which sit beside it) and write its manifest beside it."""
    manifest = Manifest(
        target=target,
        artifact=artifact.name,
        artifact_sha256=sha256_file(artifact),
        artifact_bytes=artifact.stat().st_size,
        providers=tuple(staged.providers),
        provider_options=staged.provider_options,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        source_name=source.name,
        source_sha256=sha256_file(source),
        qdq_version=qdq_version(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        files=tuple(SideFile(name, sha256_file(artifact.parent / name), role)
                    for name, role in staged.side_files.items()),
        build=staged.build,
    )
    return write_manifest_file(manifest, manifest_path_for(artifact))
