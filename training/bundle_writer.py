"""Write a model bundle atomically: a staging directory, fsync, manifest last, rename.

A reader never sees a half-written bundle under its version name: either the rename
happened (every file complete and checksummed in the manifest) or the version does not
exist. Leftover staging directories from a crash are ignored by loaders and swept here.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core import contract
from core.ids import id_index


def new_version(fingerprint: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + fingerprint[:8]


def write_bundle(
    models_dir: Path,
    manifest: contract.Manifest,
    arrays: dict[str, np.ndarray],
    write_extra: Callable[[Path], None],
) -> Path:
    """arrays: contract file name -> array; write_extra writes the index, scorer, report."""
    models_dir.mkdir(parents=True, exist_ok=True)
    for stale in models_dir.glob(contract.STAGING_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = models_dir / f"{contract.STAGING_PREFIX}{manifest.model_version}-{os.getpid()}"
    staging.mkdir()
    try:
        missing = set(contract.ARRAY_FILES) - set(arrays)
        if missing:
            raise ValueError(f"bundle lacks {sorted(missing)}")
        for name, arr in arrays.items():
            if arr.dtype.kind != contract.ARRAY_FILES[name]:
                raise ValueError(f"{name}: dtype {arr.dtype} is not of kind {contract.ARRAY_FILES[name]}")
            np.save(staging / name, arr, allow_pickle=False)
        for ids_file, (sorted_file, rows_file) in contract.ID_INDEX_FILES.items():  # id -> row, shared by workers
            sorted_ids, rows = id_index(arrays[ids_file])
            np.save(staging / sorted_file, sorted_ids, allow_pickle=False)
            np.save(staging / rows_file, rows, allow_pickle=False)
        write_extra(staging)
        manifest.files = contract.describe_files(staging)
        (staging / contract.MANIFEST_FILE).write_text(manifest.to_json())
        for path in staging.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        contract.fsync_dir(staging)
        final = models_dir / manifest.model_version
        os.rename(staging, final)
        contract.fsync_dir(models_dir)
        return final
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
