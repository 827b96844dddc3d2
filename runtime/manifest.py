"""Build manifests: the small JSON file `qdq build` writes next to an artifact, and its checks.

A manifest ``<artifact name>.manifest.json`` records what was built (target, backend, providers and
their options, inputs/outputs), from what (source model name and sha256) and by which qdq version,
plus the artifact's own sha256 so a modified, truncated or swapped file is caught before loading.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EngineError
from .specs import TensorSpec

log = logging.getLogger(__name__)

SCHEMA = "qdq-manifest/1"
MANIFEST_SUFFIX = ".manifest.json"

#: build target -> (runtime backend, artifact file suffixes)
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ort-cpu": ("onnxruntime", (".onnx",)),
    "ort-cuda": ("onnxruntime", (".onnx",)),
    "ort-trt": ("onnxruntime", (".onnx",)),
    "ort-edge": ("onnxruntime", (".ort",)),
    "tensorrt": ("tensorrt", (".engine", ".plan")),
}

#: roles of side files; files with a role in this set are needed to load the artifact and are verified
LOAD_ROLES = frozenset({"external-data"})


def manifest_path_for(artifact: str | os.PathLike[str]) -> Path:
    """Where the manifest of ``artifact`` lives: ``<artifact name>.manifest.json`` beside it."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def is_manifest_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).name.endswith(MANIFEST_SUFFIX)


def manifest_in_folder(folder: str | os.PathLike[str]) -> Path:
    """The one build manifest in ``folder`` (a `qdq build` output folder); EngineError if none or several."""
    folder = Path(folder)
    manifests = sorted(p for p in folder.iterdir() if p.is_file() and is_manifest_path(p))
    if not manifests:
        raise EngineError(f"{folder} is a folder with no build manifest (*{MANIFEST_SUFFIX}); pass a model file "
                          f"(.onnx, .ort, .engine) or a folder holding one `qdq build` artifact and its manifest")
    if len(manifests) > 1:
        names = ", ".join(p.name for p in manifests)
        raise EngineError(f"{folder} is a folder with {len(manifests)} build manifests ({names}); pass one "
                          f"artifact or its manifest")
    return manifests[0]


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _spec_to_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "dtype": np.dtype(spec.dtype).name, "shape": list(spec.shape)}


def _spec_from_dict(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(str(d["name"]), np.dtype(d["dtype"]), tuple(d["shape"]))


@dataclass(frozen=True)
class SideFile:
    """A file that belongs to the artifact (external weights, reduced-ops config)."""

    name: str
    sha256: str
    role: str


@dataclass(frozen=True)
class Manifest:
    """What `qdq build` produced; see the module docstring."""

    target: str
    artifact: str
    artifact_sha256: str
    artifact_bytes: int
    providers: tuple[str, ...]
    provider_options: dict[str, dict[str, str]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source_name: str
    source_sha256: str
    qdq_version: str
    created: str
    files: tuple[SideFile, ...] = ()
    build: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return TARGETS[self.target][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "target": self.target,
            "backend": self.backend,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "artifact_bytes": self.artifact_bytes,
            "files": [{"name": f.name, "sha256": f.sha256, "role": f.role} for f in self.files],
            "providers": list(self.providers),
            "provider_options": self.provider_options,
            "inputs": [_spec_to_dict(s) for s in self.inputs],
            "outputs": [_spec_to_dict(s) for s in self.outputs],
            "source": {"name": self.source_name, "sha256": self.source_sha256},
            "qdq_version": self.qdq_version,
            "created": self.created,
            "build": self.build,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], label: str = "manifest") -> "Manifest":
        """Parse and validate a manifest dict, raising EngineError naming ``label`` and the bad field."""
        if not isinstance(d, dict):
            raise EngineError(f"{label} is not a qdq build manifest (expected a JSON object)")
        if d.get("schema") != SCHEMA:
            raise EngineError(f"{label} is not a qdq build manifest (schema {d.get('schema')!r}, expected {SCHEMA!r})")
        try:
            target = str(d["target"])
            if target not in TARGETS:
                raise EngineError(f"{label} names unknown target {target!r} (known: {', '.join(TARGETS)})")
            return cls(
                target=target,
                artifact=str(d["artifact"]),
                artifact_sha256=str(d["artifact_sha256"]),
                artifact_bytes=int(d["artifact_bytes"]),
                providers=tuple(str(p) for p in d["providers"]),
                provider_options={str(k): {str(a): str(b) for a, b in v.items()}
                                  for k, v in (d.get("provider_options") or {}).items()},
                inputs=tuple(_spec_from_dict(s) for s in d["inputs"]),
                outputs=tuple(_spec_from_dict(s) for s in d["outputs"]),
                source_name=str(d["source"]["name"]),
                source_sha256=str(d["source"]["sha256"]),
                qdq_version=str(d["qdq_version"]),
                created=str(d["created"]),
                files=tuple(SideFile(str(f["name"]), str(f["sha256"]), str(f["role"])) for f in d.get("files", [])),
                build=dict(d.get("build") or {}),
            )
        except KeyError as exc:
            raise EngineError(f"{label} is missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise EngineError(f"{label} has a malformed field: {exc}") from None

    def resolved_provider_options(self, folder: Path) -> dict[str, dict[str, str]]:
        """Provider options with relative ``*_path`` values made absolute against the manifest's folder."""
        out: dict[str, dict[str, str]] = {}
        for provider, opts in self.provider_options.items():
            out[provider] = {k: (str(folder / v) if k.endswith("_path") and v and not os.path.isabs(v) else v)
                             for k, v in opts.items()}
        return out


def write_manifest_file(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write ``manifest`` as JSON to ``path`` atomically."""
    from .atomic import atomic_write

    text = json.dumps(manifest.to_dict(), indent=1) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # temp files are created 0600; a manifest is as readable as its artifact

    return atomic_write(path, write)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file; EngineError names the file and the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"manifest not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"manifest {path} is not valid JSON ({exc}); rebuild with `qdq build`") from None
    return Manifest.from_dict(data, label=f"manifest {path}")


def verify_artifact(manifest: Manifest, manifest_path: Path, artifact: Path) -> None:
    """Check that ``artifact`` is the file ``manifest`` describes (name, kind, size, sha256, side files)."""
    if manifest.artifact != artifact.name:
        raise EngineError(f"manifest {manifest_path} describes {manifest.artifact!r}, not {artifact.name!r}; "
                          "the files were renamed or mixed up, rebuild with `qdq build`")
    suffixes = TARGETS[manifest.target][1]
    if artifact.suffix.lower() not in suffixes:
        raise EngineError(f"manifest {manifest_path} says target {manifest.target} (a {'/'.join(suffixes)} file), "
                          f"but {artifact} is a {artifact.suffix or 'suffix-less'} file")
    if not artifact.is_file():
        raise EngineError(f"manifest {manifest_path} names {artifact}, which does not exist")
    size = artifact.stat().st_size
    if size != manifest.artifact_bytes:
        raise EngineError(f"{artifact} does not match its manifest {manifest_path}: {size} bytes on disk, "
                          f"{manifest.artifact_bytes} recorded (truncated or modified after the build); rebuild it")
    digest = sha256_file(artifact)
    if digest != manifest.artifact_sha256:
        raise EngineError(f"{artifact} does not match its manifest {manifest_path}: sha256 {digest[:16]}… on disk, "
                          f"{manifest.artifact_sha256[:16]}… recorded (modified after the build); rebuild it")
    for side in manifest.files:
        if side.role not in LOAD_ROLES:
            continue
        p = artifact.parent / side.name
        if not p.is_file():
            raise EngineError(f"{artifact} needs {side.role} file {p} (listed in {manifest_path}), which is missing")
        if sha256_file(p) != side.sha256:
            raise EngineError(f"{side.role} file {p} does not match its manifest {manifest_path}; rebuild it")


def locate(path: Path) -> tuple[Path, Manifest | None, Path | None]:
    """Resolve what ``Engine.load(path)`` should open: ``(artifact, manifest, manifest path)``.

    ``path`` may be the artifact (its manifest, if any, is found beside it) or the manifest itself.
    A found manifest is validated against the artifact.
    """
    if is_manifest_path(path):
        manifest_path = path
        manifest = read_manifest(path)
        artifact = path.parent / manifest.artifact
    else:
        manifest_path = manifest_path_for(path)
        if not manifest_path.is_file():
            return path, None, None
        manifest = read_manifest(manifest_path)
        artifact = path
    verify_artifact(manifest, manifest_path, artifact)
    log.debug("%s: manifest %s (target %s)", artifact, manifest_path, manifest.target)
    return artifact, manifest, manifest_path
