"""The typed config: presets validate, unknown keys/wrong types fail naming the key path and the nearest name."""

from __future__ import annotations

import pytest
import torch
import yaml

from chestdx.models import METADATA_FIELDS, available_models
from chestdx.train import config as C
from chestdx.train.config import ConfigError, UnknownConfigKeyError, load_config, preset_names
from chestdx.train.config_schema import ChestConfig, ModelSection, parse_policy
from chestdx.train.losses import FocalLoss, MaskedBCE, WeightedBCE, build_loss


@pytest.mark.parametrize("name", preset_names())
def test_every_packaged_preset_validates(name):
    config = load_config(name)
    assert ChestConfig.model_validate(config).model_dump() == config  # a fixed point: nothing left to fill
    assert config["model"]["arch"] in available_models()


def test_presets_ship_inside_the_package():
    names = preset_names()
    assert {"default", "demo", "seed", "densenet121", "vit_b16", "default_metadata", "gpu_nih"} <= set(names)
    assert all(first for _, first in C.list_presets())  # every preset opens with a describing comment


@pytest.mark.parametrize(("override", "suggestion"), [
    ("optimizer.lrr=0.1", "optimizer.lr"),
    ("early_stopping.patiense=9", "early_stopping.patience"),
    ("modle.arch=simple_cnn", "model"),
    ("augment.rotate=3", "augment.rotate_deg"),
    ("calibration.min_positive=3", "calibration.min_positives"),
])
def test_unknown_override_names_the_nearest_key(override, suggestion):
    with pytest.raises(UnknownConfigKeyError) as err:
        load_config("default", [override])
    message = str(err.value)
    key = ".".join(override.split("=")[0].split(".")[: suggestion.count(".") + 1])  # the first unknown segment
    assert f"unknown config key {key!r}" in message and f"did you mean {suggestion!r}" in message
    assert isinstance(err.value, KeyError)  # older callers catch KeyError


def test_yaml_typo_in_a_preset_fails_with_file_and_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: default\noptimizer: {name: adamw, lrr: 0.1}\n")
    with pytest.raises(UnknownConfigKeyError, match=r"mine\.yaml.*'optimizer\.lrr'.*did you mean 'optimizer\.lr'"):
        load_config(path)
    path.write_text("inherit: default\nearly_stoping: {patience: 3}\n")
    with pytest.raises(UnknownConfigKeyError, match="did you mean 'early_stopping'"):
        load_config(path)


@pytest.mark.parametrize(("override", "key"), [
    ("epochs=abc", "epochs"),
    ("epochs=true", "epochs"),       # a bool is not an int
    ("epochs=2.5", "epochs"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("optimizer.name=adagrad", "optimizer.name"),
    ("split.val=1.5", "split.val"),
    ("folds=0", "folds"),
    ("model.metadata=[age, height]", "model.metadata[1]"),
    ("calibration.policy=sens:0.9", "calibration.policy"),
    ("calibration.policy=sensitivity:1.5", "calibration.policy"),
    ("progress=maybe", "progress"),
])
def test_wrong_types_and_values_fail_with_the_key_path(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("default", [override])
    assert str(err.value).startswith(f"--set {override}: {key}: ")


def test_wrong_type_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: sixteen\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: batch_size: .*integer.*'sixteen'"):
        load_config(path)


def test_field_type_decides_how_an_override_is_parsed():
    cfg = load_config("default", ["name=1e3", "data=007", "optimizer.lr=3e-4", "model.pretrained=null",
                                  "devices=auto", "labels=[Effusion, Mass]", "limit_train_batches=0.5"])
    assert cfg["name"] == "1e3" and cfg["data"] == "007"           # text fields keep the text
    assert cfg["optimizer"]["lr"] == pytest.approx(3e-4) and cfg["model"]["pretrained"] is None
    assert cfg["devices"] == "auto" and cfg["labels"] == ["Effusion", "Mass"] and cfg["limit_train_batches"] == 0.5
    assert load_config("default", ["devices=2"])["devices"] == 2


def test_arch_and_freeze_are_checked_against_the_registry(monkeypatch):
    with pytest.raises(ConfigError, match=r"model\.arch: unknown architecture 'densenet12' \(did you mean "
                                          r"'densenet121'\?\)"):
        load_config("default", ["model.arch=densenet12"])
    with pytest.raises(ConfigError, match=r"model\.freeze: 'sed' is not a freeze point.*did you mean 'seed'"):
        load_config("default", ["model.freeze=sed"])
    # a newly registered architecture is accepted without touching the schema
    from chestdx.models import registry

    monkeypatch.setitem(registry.MODELS, "my_net", registry.MODELS["simple_cnn"])
    assert load_config("demo", ["model.arch=my_net"])["model"]["arch"] == "my_net"


def test_metadata_choices_match_the_models():
    allowed = ModelSection.model_fields["metadata"].annotation.__args__[0].__args__
    assert set(allowed) == set(METADATA_FIELDS)


def test_loss_string_and_mapping_forms():
    assert load_config("default")["loss"] == "weighted_bce"  # the compact form round-trips
    cfg = load_config("default", ["loss={name: focal, gamma: 1.5, alpha: 0.25}"])
    assert cfg["loss"] == {"name": "focal", "gamma": 1.5, "alpha": 0.25}
    assert load_config("default", ["loss=focal", "loss.gamma=3"])["loss"] == {"name": "focal", "gamma": 3.0}
    assert load_config("default", ["loss={name: focal, gamma: 1}", "loss=bce"])["loss"] == "bce"  # params dropped
    with pytest.raises(ConfigError, match=r"loss: gamma: parameters of the focal loss only"):
        load_config("default", ["loss.gamma=3"])
    with pytest.raises(ConfigError, match="loss.name"):
        load_config("default", ["loss=hinge"])
    labels = torch.zeros(4, 2).numpy()
    assert isinstance(build_loss(load_config("default")["loss"], labels), WeightedBCE)
    assert isinstance(build_loss({"name": "bce"}), MaskedBCE)
    focal = build_loss(cfg["loss"])
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.5 and float(focal.alpha) == 0.25
    with pytest.raises(ValueError, match="takes no parameters"):
        build_loss({"name": "bce", "gamma": 2.0})


def test_loss_parameters_in_a_preset_merge_with_its_parent(tmp_path):
    (tmp_path / "parent.yaml").write_text("inherit: default\nloss: {name: focal, gamma: 1.0, alpha: 0.5}\n")
    (tmp_path / "child.yaml").write_text("inherit: parent.yaml\nloss: {gamma: 3.0}\n")
    (tmp_path / "other.yaml").write_text("inherit: parent.yaml\nloss: bce\n")
    assert load_config(tmp_path / "child.yaml")["loss"] == {"name": "focal", "gamma": 3.0, "alpha": 0.5}
    assert load_config(tmp_path / "other.yaml")["loss"] == "bce"


def test_inherit_cycles_and_depth_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\nepochs: 2\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(ConfigError, match="inherit cycle"):
        load_config(tmp_path / "a.yaml")
    depth = C.MAX_INHERIT_DEPTH
    (tmp_path / "c0.yaml").write_text("inherit: default\nepochs: 3\n")
    for i in range(1, depth + 1):
        (tmp_path / f"c{i}.yaml").write_text(f"inherit: c{i - 1}.yaml\n")
    assert load_config(tmp_path / f"c{depth - 2}.yaml")["epochs"] == 3  # within the limit: nothing dropped
    with pytest.raises(ConfigError, match=f"longer than {depth}"):
        load_config(tmp_path / f"c{depth}.yaml")


def test_missing_preset_suggests_a_name():
    with pytest.raises(FileNotFoundError, match=r"did you mean 'default'.*presets: "):
        load_config("defualt")


def test_saved_config_reloads_identically(tmp_path):
    cfg = dict(load_config("default", ["loss={name: focal, gamma: 2.0}", "folds=5"]), labels_resolved=["Mass"])
    C.save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["folds"] == 5


def test_new_keys_for_kfold_and_calibration():
    assert C.DEFAULTS["folds"] == 1 and C.DEFAULTS["calibration"] == {"policy": "auto", "min_positives": 10}
    cfg = load_config("default", ["folds=5", "calibration.policy=Specificity:0.95"])
    assert cfg["folds"] == 5 and cfg["calibration"]["policy"] == "specificity:0.95"
    assert parse_policy("auto") == ("auto", None)
    assert parse_policy("balanced") == ("balanced", None)
    assert parse_policy("sensitivity:0.9") == ("sensitivity", 0.9)
    for bad in ("sensitivity:0", "sensitivity:", "npv:0.9", "sensitivity:1.2"):
        with pytest.raises(ValueError):
            parse_policy(bad)


def test_chestmodule_fills_optimizer_defaults_from_the_schema_and_reloads(tmp_path):
    import lightning as L

    from chestdx.models import build_model
    from chestdx.train.module import ChestModule

    model = build_model("simple_cnn", 2, input_size=32)
    module = ChestModule(model, MaskedBCE(), {"name": "sgd"}, {"name": "none"}, ["a", "b"])
    assert module.optim_cfg == {"name": "sgd", "lr": 1e-3, "weight_decay": 0.0}
    trainer = L.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    again = ChestModule.load_from_checkpoint(tmp_path / "m.ckpt", model=build_model("simple_cnn", 2, input_size=32),
                                             loss=MaskedBCE())  # plain hparams: loads with weights_only
    assert again.label_names == ["a", "b"] and again.optim_cfg == module.optim_cfg
    for key, value in module.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_default_has_intensity_augmentation_and_default_geometric_is_default_without_it():
    """docs/robustness.md: the two-seed decision put intensity augmentation in `default`; the old recipe stays."""
    new, old = load_config("default"), load_config("default_geometric")
    strengths = ("gamma", "contrast", "noise_std", "blur_sigma")
    assert all(new["augment"][k] > 0 for k in strengths) and all(old["augment"][k] == 0 for k in strengths)
    assert {k: v for k, v in old.items() if k not in ("name", "augment")} == \
        {k: v for k, v in new.items() if k not in ("name", "augment")}
    assert {k: v for k, v in old["augment"].items() if k not in strengths} == \
        {k: v for k, v in new["augment"].items() if k not in strengths}
