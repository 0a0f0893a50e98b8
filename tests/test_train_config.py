"""Trainer configs: TOML/YAML files set defaults, flags override, unknown keys and bad values are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ares_data.errors import ConfigError
from ares_train.config import build_config, field_help, load_config
from ares_train.rollout import RolloutConfig
from ares_train.sft import SFTConfig
from tests.helpers import train


def test_toml_sets_defaults_and_flags_override(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('model = "m"\ncorrections = "c"\noutput-dir = "out"\nlr = 1\nlora_target_modules = '
                 '["q_proj", "v_proj"]\n')
    cfg = load_config(SFTConfig, f, {"lr": 3e-4, "batch_size": None, "epochs": 2})
    assert cfg.model == "m" and cfg.output_dir == "out" and cfg.lr == 3e-4 and cfg.epochs == 2.0
    assert cfg.batch_size == 4  # None = flag not given: the dataclass default stays
    assert cfg.lora_target_modules == "q_proj,v_proj" and isinstance(load_config(SFTConfig, f).lr, float)


def test_yaml_and_sections(tmp_path: Path) -> None:
    f = tmp_path / "ares.yaml"
    f.write_text("rollout:\n  k: 8\n  temperature: 0.7\nsft:\n  lora_r: 16\n")
    assert load_config(RolloutConfig, f, section="rollout").k == 8
    sft = load_config(SFTConfig, f, section="sft")
    lora = sft.lora_options()
    assert sft.lora_r == 16 and lora is not None and lora.targets() == "all-linear"


def test_top_level_settings_beside_the_section_table_are_not_ignored(tmp_path: Path) -> None:
    f = tmp_path / "sft.toml"
    f.write_text("lr = 1e-4\n[sft]\nepochs = 2\n")  # lr would silently not apply to sft
    with pytest.raises(ConfigError, match=r"'lr' .*outside the \[sft\] table") as info:
        load_config(SFTConfig, f, section="sft")
    assert str(f) in str(info.value)
    f.write_text("[rollout]\nk = 2\n[sft]\nepochs = 2\n")  # other stages' tables are fine
    assert load_config(SFTConfig, f, section="sft").epochs == 2.0


@pytest.mark.parametrize("text,message", [
    ("k = 4\nbatchsize = 3\n", "unknown key 'batchsize' in config file"),
    ("k = 'four'\n", "'k' expects int"),
    ("k = [\n", "could not be parsed"),
])
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(RolloutConfig, f)
    assert str(f) in str(info.value)


def test_validation_rule(tmp_path: Path) -> None:
    ok, warnings = build_config(SFTConfig, None, {"model": "m", "corrections": "c", "output_dir": "o"})
    assert warnings == []  # correct: silent
    _, warnings = build_config(SFTConfig, None, {"model": "m", "corrections": "c", "output_dir": "o",
                                                 "merge": True})
    assert any("--merge has no effect without LoRA" in w and "--lora-r" in w for w in warnings)
    with pytest.raises(ConfigError, match="lora_dropout"):  # unsupported: error with the fix
        build_config(SFTConfig, None, {"model": "m", "corrections": "c", "output_dir": "o", "lora_r": 4,
                                       "lora_dropout": 1.5})
    assert "LoRA rank" in field_help(SFTConfig, "lora_r")


def test_cli_config_file_override_and_unknown_key(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text("[rollout]\nproblems = 'sqa'\nk = 2\ntemprature = 0.5\n")
    r = train(["--store", tmp_path / "store", "rollout", "--model", "m", "-o", "x", "--config", f])
    assert r.exit_code == 1 and "unknown key 'temprature'" in r.stderr and str(f) in r.stderr
    f.write_text("[rollout]\nproblems = 'missing'\nk = 0\n")
    r = train(["--store", tmp_path / "store", "rollout", "--model", "m", "-o", "x", "--config", f])
    assert r.exit_code == 1 and "k, max_new_tokens and batch_size must be >= 1" in r.stderr
    r = train(["--store", tmp_path / "store", "rollout", "--model", "m", "-o", "x", "--config", f, "--k", 3])
    assert r.exit_code != 0 and "missing" in r.stderr  # --k 3 overrode k = 0; now the dataset is missing


@pytest.mark.parametrize("command", ["rollout", "sft", "ppo"])
def test_help(command: str) -> None:
    r = train([command, "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "--config" in r.stdout and "(default: " in r.stdout
    assert f"Example: ares-train {command} --model" in r.stdout


@pytest.mark.parametrize("name,kind", [("deepspeed_zero2", "DEEPSPEED"), ("deepspeed_zero3", "DEEPSPEED"),
                                       ("fsdp", "FSDP")])
def test_shipped_accelerate_configs_parse(name: str, kind: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    from ares_train.configs import config_path

    cfg = ClusterConfig.from_yaml_file(str(config_path(name)))
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16"
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
    else:
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_manifest_names_a_local_base_model_by_absolute_path(tmp_path: Path, monkeypatch) -> None:
    """`--model m` run from some folder: the manifest must still name that model from anywhere."""
    from ares_train.checkpoint import read_checkpoint_manifest, write_checkpoint_manifest

    (tmp_path / "m").mkdir()
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    write_checkpoint_manifest("out", "sft", "m", [], {}, base_fingerprint="b", weights_fingerprint="w")
    assert read_checkpoint_manifest(tmp_path / "out")["base_model"] == str(tmp_path / "m")
    write_checkpoint_manifest("out", "sft", "org/name", [], {}, base_fingerprint="b", weights_fingerprint="w")
    assert read_checkpoint_manifest(tmp_path / "out")["base_model"] == "org/name"  # a hub id stays as given
