"""The `:uwav` configs resolve to UWAV's own values (configs/uwav.py).

testdata/uwav_recipe.json is a table of UWAV's hyper-parameters and
switches read from its public scripts and code (file and commit per
entry), keyed by the ear-jax field that holds each.
"""

import json
import math
import pathlib

from flax import nnx
import numpy as np
import pytest

from ear_jax.configs import stage1
from ear_jax.configs import stage2
from ear_jax.configs import stage3
from ear_jax.configs import uwav
from ear_jax import models as models_lib

RECIPE = pathlib.Path(__file__).parent / "testdata" / "uwav_recipe.json"
STAGES = {"pretrain_generator": stage1, "generate_pseudo_labels": stage2,
          "train_parser": stage3}


def _recipe():
  with open(RECIPE, encoding="utf-8") as f:
    return json.load(f)["stages"]


def _get(config, dotted):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _same(got, want):
  if isinstance(want, bool) or not isinstance(want, (int, float)):
    return type(got) is type(want) and got == want
  return not isinstance(got, bool) and math.isclose(got, want, rel_tol=1e-12)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_uwav_config_matches_uwav_scripts(stage):
  entries = _recipe()[stage]
  c = STAGES[stage].get_config("uwav")
  assert c.stage == stage
  wrong = [f"{e['field']}: {_get(c, e['field'])!r}, UWAV {e['value']!r}"
           f" ({e['file']}: {e['uwav']})" for e in entries
           if not _same(_get(c, e["field"]), e["value"])]
  assert not wrong, f"configs/stage*.py:uwav ({stage}) differs: {wrong}"
  for e in entries:
    assert e["commit"].startswith("eb81492") and e["file"], e


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_override_has_a_documented_uwav_value(stage):
  fields = [e["field"] for e in _recipe()[stage]]
  assert len(fields) == len(set(fields)), "a field is listed twice"
  assert set(uwav.OVERRIDES[stage]) == set(fields), (
      "configs/uwav.py and testdata/uwav_recipe.json list different fields:"
      f" only in OVERRIDES {sorted(set(uwav.OVERRIDES[stage]) - set(fields))},"
      f" only in the table {sorted(set(fields) - set(uwav.OVERRIDES[stage]))}")


def test_uwav_combines_with_tiny_and_small():
  for arg in ("uwav,tiny", "tiny,uwav", "uwav,small"):
    c1, c2, c3 = (m.get_config(arg) for m in (stage1, stage2, stage3))
    # UWAV's switches stay; the sizes are the variant's.
    assert c1.model.asymmetric is False and not c1.migration.enabled
    assert c1.model.identical_layer_init and c3.model.identical_layer_init
    assert c3.model.name == "han" and c2.threshold_precision == "float32"
    assert c1.model.hidden_dim == stage1.get_config(arg.replace(
        "uwav", "").strip(",")).model.hidden_dim < 1024
    assert c3.model.hidden_dim < 512
  # :tiny stage-1 runs rarely beat Seg-av 0, so they have no best/.
  assert stage2.get_config("uwav,tiny").checkpoint == "auto"


def test_defaults_are_unchanged_without_uwav():
  c1, c3 = stage1.get_config(), stage3.get_config()
  assert c1.model.asymmetric and c1.migration.enabled
  assert not c1.model.identical_layer_init
  assert c3.model.name == "ear" and c3.model.identical_layer_init is False
  assert c1.matmul_precision == c3.matmul_precision == "default"
  assert stage2.get_config().threshold_precision == "float64"


def test_identical_layer_init_reaches_the_stage3_models():
  """model.identical_layer_init is a stage-3 field the HAN reads."""
  def han_layers(identical):
    c = stage3.get_config("tiny")
    c.model.update(name="han", han_layers=2, identical_layer_init=identical)
    model = models_lib.get_model("han", c.model, rngs=nnx.Rngs(0),
                                 in_dim_a=8, in_dim_v=8, num_classes=25)
    flat = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in
            nnx.to_flat_state(nnx.state(model, nnx.Param))}
    layer = lambda i: {k.split(f"layers/{i}/", 1)[1]: v for k, v in
                       flat.items() if f"layers/{i}/" in k}
    return layer(0), layer(1)

  first, second = han_layers(True)
  assert first and all(np.array_equal(first[k], second[k]) for k in first)
  first, second = han_layers(False)
  assert not all(np.array_equal(first[k], second[k]) for k in first)


def test_apply_refuses_unknown_stages_and_fields(monkeypatch):
  c = stage3.get_config()
  with pytest.raises(ValueError, match="no recipe for stage 'parse'"):
    uwav.apply(c, "parse")
  monkeypatch.setitem(uwav.OVERRIDES, "train_parser",
                      {"model.no_such_field": 1})
  with pytest.raises(KeyError, match="'model.no_such_field' names no field"):
    uwav.apply(c, "train_parser")
