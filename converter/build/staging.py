"""Atomic multi-file builds: everything is written into a hidden staging folder beside the output and
moved into place only when the whole build succeeded, manifest last. A failed build leaves nothing."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.atomic import move_into_place
from runtime.manifest import manifest_path_for

log = logging.getLogger(__name__)


@dataclass
class StagedBuild:
    """What a target builder produced in the staging folder, besides the artifact itself."""

    providers: list[str]
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)
    side_files: dict[str, str] = field(default_factory=dict)  # file name in the staging folder -> role
    build: dict[str, Any] = field(default_factory=dict)  # target-specific facts for the manifest


def commit(staging: Path, output: Path, side_files: list[str]) -> list[Path]:
    """Move the staged artifact, its side files and its manifest into ``output``'s folder.

    The old manifest (if any) goes first and the new one last, so a reader never pairs a new artifact
    with an old manifest: at worst it sees an artifact without a manifest for an instant.
    """
    manifest = manifest_path_for(output)
    manifest.unlink(missing_ok=True)
    moved = move_into_place(staging, output, side_files)
    os.replace(staging / manifest.name, manifest)
    log.debug("committed %s", ", ".join(str(p) for p in [*moved, manifest]))
    return moved
