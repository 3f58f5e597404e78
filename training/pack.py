"""Pack a part of the training data small enough to travel to a lent GPU machine.

    python -m training.pack --out .gpu/data [--max-mb 30] [--val-faces 6]

A device call sends the repository (64 MiB in all, about 27 of them the repository itself) and
not ``../shared``, so a GPU run reads this pack instead (``--data-dir .gpu/data --keep-fraction 1``).
It holds, in ``../shared/data``'s own layout:

- ``train/``: the sharpest UTKFace faces (by the manifest's Laplacian variance, grayish ones
  skipped, as ``data.sharp_face_files`` ranks them) until the pack reaches ``--max-mb``, with a
  manifest of just those rows;
- ``train_hq/``: all of it (about 2 MB);
- ``eval/``: the ``--val-faces`` validation faces that ``train.validation_set`` picks from the full
  set, so a run's validation scores are the same faces as at home.

``.gpu/`` is ignored by git: nothing from ``../shared/data`` is ever committed.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from .data import DEFAULT_DATA_DIR, eval_face_files, read_manifest


def validation_files(data_dir: Path, count: int) -> list[Path]:
    """The files ``train.validation_set(data_dir, count)`` reads, in its order."""
    files = eval_face_files(data_dir)
    step = max(1, len(files) // max(count, 1))
    return files[::step][:count]


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)


def pack(data_dir: Path, out: Path, max_mb: float = 30.0, val_faces: int = 6) -> dict[str, float]:
    """Writes the pack; returns what went in (faces, hq faces, validation faces, megabytes)."""
    if out.exists():
        shutil.rmtree(out)
    budget = int(max_mb * 1024 * 1024)
    used = 0
    copied: dict[str, int] = {"eval": 0, "train_hq": 0}
    for path in validation_files(data_dir, val_faces):
        (out / "eval").mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / "eval" / path.name)
        used += path.stat().st_size
        copied["eval"] += 1
    hq_root = data_dir / "train_hq"
    if (hq_root / "manifest.csv").exists():
        for row in read_manifest(hq_root / "manifest.csv"):
            source = hq_root / row["file"]
            (out / "train_hq" / row["file"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / "train_hq" / row["file"])
            used += source.stat().st_size
            copied["train_hq"] += 1
        shutil.copy2(hq_root / "manifest.csv", out / "train_hq" / "manifest.csv")
    rows = [r for r in read_manifest(data_dir / "train" / "manifest.csv") if r["near_gray"] != "1"]
    rows.sort(key=lambda r: float(r["laplacian_var"]), reverse=True)
    kept: list[dict[str, str]] = []
    for row in rows:
        source = data_dir / "train" / row["file"]
        size = source.stat().st_size
        if used + size > budget:
            break
        target = out / "train" / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        used += size
        kept.append(row)
    _write_manifest(out / "train" / "manifest.csv", kept)
    return {"faces": len(kept), "hq_faces": copied["train_hq"], "val_faces": copied["eval"], "mb": used / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=Path(".gpu/data"))
    parser.add_argument("--max-mb", type=float, default=30.0, help="the pack's size at most, in MiB")
    parser.add_argument("--val-faces", type=int, default=6, help="as train.py's --val-faces")
    args = parser.parse_args(argv)
    if not (args.data_dir / "train" / "manifest.csv").exists():
        parser.error(f"{args.data_dir} holds no train/manifest.csv")
    result = pack(args.data_dir, args.out, args.max_mb, args.val_faces)
    print(f"{args.out}: {result['faces']} UTKFace faces, {result['hq_faces']} train_hq faces, "
          f"{result['val_faces']} validation faces, {result['mb']:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
