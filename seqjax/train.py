"""The public names of ``seqjax.training``, where they live by job:
optimizers, losses, steps (the pure step, the scanned train call, compile
counting), schedules, records and the fit loop."""

# pylint: disable=unused-import
from seqjax.training.losses import (Batch, LossFn, StatefulLossFn,
                                    make_classifier_loss, make_eval_step,
                                    make_free_running_loss, make_seq2seq_loss,
                                    make_stateful_eval_step,
                                    make_token_log_probs)
from seqjax.training.hooks import Hook
from seqjax.training.loop import TrainCall
from seqjax.training.standard import fit, standard_hooks
from seqjax.training.optimizers import (DEFAULT_LEARNING_RATES, LR_SCHEDULES,
                                        OPTIMIZERS, TrainState, base_optimizer,
                                        create_train_state, learning_rate_of,
                                        make_optimizer, warmup_cosine,
                                        with_learning_rate)
from seqjax.training.records import (FitConfig, FitStats, MetricsLog,
                                     nonfinite_what, save_last_good)
from seqjax.training.schedules import (BucketPlan, Feed, ShuffledRows,
                                       StatefulBlocks, epoch_permutation,
                                       make_schedule, stateful_permutation,
                                       steps_per_epoch)
from seqjax.training.steps import (CALL_IDS, NONFINITE_MODES, CompileCount,
                                   StreamCarry, compiles_of, count_compiles,
                                   jit_train_step, make_multi_step, make_step,
                                   train_call_fn,
                                   make_stateful_train_step, make_train_step)
