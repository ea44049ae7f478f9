"""What the GPU machine lacks, packed into ``.gpu_carry/`` (ignored by git), which travels with the working tree.

- ``fashion-mnist/``: the four IDX ``.gz`` files (31 MB), copied from Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``) or a folder given with ``--data``;
- ``pyautoattack-VERSION-py3-none-any.whl``: AutoAttack's Python modules only. The wheel on PyPI is 42 MB,
  almost all of it an example model (``examples/model_test.pt``): beside the data it would overflow the
  64 MiB that may travel with the tree, so it is repacked without ``examples/`` (with a matching RECORD).

The working tree that travels is the tracked and untracked-not-ignored files plus the carried folder;
:func:`sizes` adds them up against the 64 MiB limit.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY = ROOT / ".gpu_carry"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
LIMIT_MIB = 64.0
AA_DIST = "pyautoattack"


class PackError(RuntimeError):
    """Something the pack step needs is missing; the message names the fix."""


def has_idx_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in IDX_FILES)


def copy_data(source: Path, dest: Path) -> list[Path]:
    if not has_idx_files(source):
        raise PackError(f"Fashion-MNIST not found in {source}: install it with `apt-get install "
                        "dataset-fashion-mnist` (31 MB) or give a folder with the four .gz files via --data")
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(source / f, dest / f)) for f in IDX_FILES]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim_wheel(wheel: Path, dest_dir: Path) -> Path:
    """``wheel`` without its ``examples/`` folder (the package's modules and its dist-info), RECORD rewritten."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / wheel.name
    with zipfile.ZipFile(wheel) as src:
        names = [n for n in src.namelist() if "/examples/" not in n and not n.endswith("/RECORD")]
        record = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            lines = []
            for n in names:
                data = src.read(n)
                dst.writestr(n, data)
                lines.append(f"{n},{_record_hash(data)},{len(data)}")
            lines.append(f"{record},,")
            dst.writestr(record, "\n".join(lines) + "\n")
    return out


def aa_version() -> str:
    """The pyautoattack version to carry: the one installed here, else the one the project was measured with."""
    try:
        return importlib.metadata.version(AA_DIST)
    except importlib.metadata.PackageNotFoundError:
        return "0.2.0"


def download_wheel(version: str, folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(folder),
           f"{AA_DIST}=={version}"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(f"{AA_DIST}-{version}-*.whl"))
    if r.returncode != 0 or not found:
        raise PackError(f"could not download {AA_DIST}=={version} from PyPI ({(r.stderr or r.stdout).strip()[-200:]});"
                        " give the wheel with --wheel FILE")
    return found[0]


def pack(data: Path | None = None, wheel: Path | None = None, carry: Path = CARRY) -> list[str]:
    """Fill ``carry`` with the data and the slim AutoAttack wheel; returns what was done, one line each."""
    carry.mkdir(parents=True, exist_ok=True)
    files = copy_data(data or DEBIAN_DIR, carry / "fashion-mnist")
    lines = [f"data: {len(files)} files from {data or DEBIAN_DIR} -> {carry / 'fashion-mnist'}"]
    for old in carry.glob(f"{AA_DIST}-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        full = wheel or download_wheel(aa_version(), Path(tmp))
        slim = slim_wheel(full, carry)
        lines.append(f"AutoAttack: {full.name} ({full.stat().st_size / 2**20:.1f} MiB"
                     f"{'' if wheel else ', from PyPI'}) without examples/ -> {slim} "
                     f"({slim.stat().st_size / 2**20:.2f} MiB)")
    return lines


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def tree_bytes(root: Path = ROOT) -> int:
    """Tracked and untracked-not-ignored files: what travels to the GPU machine besides .gpu_carry/."""
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                       capture_output=True, check=True)
    paths = {root / p for p in r.stdout.decode().split("\0") if p}
    return sum(p.stat().st_size for p in paths if p.is_file())


def sizes(carry: Path = CARRY, root: Path = ROOT) -> dict:
    """MiB of the tree, of the carried folder, their sum, and whether it fits the device's limit."""
    tree, packed = tree_bytes(root) / 2**20, _folder_bytes(carry) / 2**20
    return {"tree_mib": round(tree, 2), "carry_mib": round(packed, 2), "total_mib": round(tree + packed, 2),
            "limit_mib": LIMIT_MIB, "fits": tree + packed <= LIMIT_MIB, "packed": status(carry)}


def status(carry: Path = CARRY) -> dict:
    """Which of the carried things are there."""
    return {"data": has_idx_files(carry / "fashion-mnist"),
            "autoattack": sorted(p.name for p in carry.glob(f"{AA_DIST}-*.whl"))}


def run_call(command: str, carry: list[str] | None = None, timeout_s: int = 600) -> str:
    """What to run on the GPU machine, what must travel with the working tree, and the time limit, in one line."""
    if len(command) > 2000:
        raise ValueError(f"the GPU machine's command line is at most 2,000 characters, this one has {len(command)}")
    return f"{command}" + (f" (with {', '.join(carry)} beside the working tree)" if carry else "") + \
        f", within {timeout_s} s"
