"""`python train.py` / `repl-train`: the Hydra entry point."""
from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from repl.errors import ReplError
from repl.config import config_dir
from repl.run import report_user_error, train_from_dictconfig


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="train")
def _main(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        summary = train_from_dictconfig(cfg, run_dir)
    except ReplError as err:
        report_user_error(err)
        sys.exit(2)
    return summary["primary"]["value"]  # what Hydra sweepers optimise


def main() -> None:
    """Console-script entry."""
    _main()
