"""ParameterError names settings; a binary renames them to its flags."""

from experiments import common
from seqjax.errors import ParameterError


def test_renamed_names_the_parameter_and_each_mention_by_its_flag():
  e = ParameterError(
      "workdir", "runs/split_seed=1", "trained with split=random (now tail), "
      "split_seed=0 (now 1); a model is needed (eval_only); split alone",
      mentions=("split", "split_seed", "eval_only"))
  assert str(e) == ("workdir=runs/split_seed=1: trained with split=random "
                    "(now tail), split_seed=0 (now 1); a model is needed "
                    "(eval_only); split alone")
  # The value and words not followed by "=" or ")" stay as they are.
  assert str(common.flag_error(e)) == (
      "--workdir=runs/split_seed=1: trained with --split=random (now tail), "
      "--split_seed=0 (now 1); a model is needed (--eval_only); split alone")


def test_flag_error_maps_parameters_named_otherwise_and_renames_once():
  e = ParameterError("path", "x.txt", "no such file (from path)",
                     mentions=("path",))
  renamed = common.flag_error(e, {"path": "data_path"})
  assert str(renamed) == "--data_path=x.txt: no such file (from --data_path)"
  assert common.flag_error(renamed) is renamed
