"""Execute notebooks/walkthrough.ipynb in place, so that it is shipped with its outputs (what `make notebook` runs).

The notebook is run top to bottom in a fresh kernel of this interpreter (nbclient), its outputs are stored in the
file, and the hash of its code cells is written to the notebook's metadata (``omics_risk.code_sha256``):
tests/test_notebook.py compares it with the code cells, so outputs left from an older version of the code fail the
test instead of being shipped. Its runs go where the notebook sends them: the project's MLflow store.

    .venv/bin/python notebooks/run_walkthrough.py [--timeout 1800]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().with_name("walkthrough.ipynb")


def code_sha256(nb: dict) -> str:
    """Hash of the code cells' sources (what the stored outputs must come from)."""
    h = hashlib.sha256()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            h.update(src.encode() + b"\0")
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    try:
        import nbclient
        import nbformat
    except ImportError:
        sys.exit("Jupyter is not installed: pip install -e '.[notebook]' (or make notebook)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=args.timeout,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    nb.metadata["omics_risk"] = {"code_sha256": code_sha256(nb)}
    nbformat.write(nb, NOTEBOOK)
    size = NOTEBOOK.stat().st_size / 1e6
    print(f"executed {NOTEBOOK} in {time.perf_counter() - t0:.0f} s; outputs stored ({size:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
