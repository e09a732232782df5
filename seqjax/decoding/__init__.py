"""Decoding: one autoregressive loop, token-selection strategies (greedy,
sampling, beam search), in-flight batching of a queue of sentences (greedy
and beam search), one factory, ``make_decoder``, and ensembles of models
decoded as one (``Ensemble``)."""

from seqjax.decoding.beam import Beams, penalty
from seqjax.decoding.decoder import (QueueDecoder, check_decoder, decode,
                                     decode_in_batches, decode_queue,
                                     make_decoder, make_inference_fns,
                                     pad_queue, plan_queue, queue_programs,
                                     queue_shape)
from seqjax.decoding.ensemble import (Ensemble, ensemble_params,
                                      make_ensemble_eval_step, member_params)
from seqjax.decoding.inflight import InFlight, check_in_flight
from seqjax.decoding.inflight_beam import InFlightBeams
from seqjax.decoding.loop import Decoded, pad_after_stop
from seqjax.decoding.strategies import (BeamSearch, Greedy, Sampling, argmax,
                                        check_beam, check_sampling, is_beam,
                                        search)

__all__ = ["BeamSearch", "Beams", "Decoded", "Ensemble", "Greedy", "InFlight",
           "InFlightBeams",
           "QueueDecoder", "Sampling", "argmax", "check_beam",
           "check_decoder", "check_in_flight", "check_sampling", "decode",
           "decode_in_batches", "decode_queue", "ensemble_params", "is_beam",
           "make_decoder", "make_ensemble_eval_step", "make_inference_fns",
           "member_params",
           "pad_after_stop", "pad_queue", "penalty", "plan_queue",
           "queue_programs", "queue_shape", "search"]
