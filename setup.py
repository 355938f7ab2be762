"""Which files the distribution holds; the metadata is in pyproject.toml.

configs/ and scripts/ stay at the top of the checkout (where `python train.py` and `python scripts/...`
use them) and are shipped inside the package as repl/configs and repl/scripts, so an installed wheel
finds them too (repl.resources.shipped_dir). results/paper.csv, the paper's reported numbers that
make_tables compares against, is shipped as repl/reference/paper.csv.
"""
from pathlib import Path

from setuptools import find_packages, setup

SHIPPED = {"repl.configs": "configs", "repl.scripts": "scripts", "repl.reference": "results"}
# Every config group is a (data-only) package of its own, so setuptools ships it without a warning.
CONFIG_GROUPS = sorted(f"repl.configs.{d.name}" for d in Path(__file__).parent.joinpath("configs").iterdir() if d.is_dir())

setup(
    packages=find_packages(include=["repl", "repl.*"]) + list(SHIPPED) + CONFIG_GROUPS,
    package_dir=SHIPPED,
    # MANIFEST.in puts the whole checkout (tests, results/, shell scripts) into the sdist; the wheel keeps only the
    # package_data below (without this, every file MANIFEST.in names under a package dir would go into the wheel).
    include_package_data=False,
    package_data={"repl.configs": ["*.yaml"], **{group: ["*.yaml"] for group in CONFIG_GROUPS},
                  "repl.reference": ["paper.csv"]},  # configs/mm/*.py (mmengine configs) are modules of repl.configs.mm
)
