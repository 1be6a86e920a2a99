"""Every shipped run config (configs/*.yaml with a top-level `model:`) loads, validates and names real options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modalrec.config import build_model_config, load_config
from modalrec.models import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))


def test_the_configs_folder_has_run_configs() -> None:
    assert len(RUN_CONFIGS) >= 20


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_loads_and_every_model_field_exists(path: Path) -> None:
    cfg = load_config(str(path), [])
    model_cls = MODELS[cfg.model_name]
    model_cfg = build_model_config(model_cls, cfg.model)  # unknown or mistyped fields raise ConfigError
    for key, value in cfg.model.items():
        if key not in ("name", "variant"):
            assert getattr(model_cfg, key) == value, f"{path.name}: model.{key}"
