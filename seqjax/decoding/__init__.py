"""Decoding: one autoregressive loop, token-selection strategies (greedy,
sampling, beam search), one factory, ``make_decoder``, and ensembles of
models decoded as one (``Ensemble``)."""

from seqjax.decoding.beam import Beams, penalty
from seqjax.decoding.decoder import (check_decoder, decode,
                                     decode_in_batches, make_decoder,
                                     make_inference_fns)
from seqjax.decoding.ensemble import Ensemble, ensemble_params, member_params
from seqjax.decoding.loop import Decoded, pad_after_stop
from seqjax.decoding.strategies import (BeamSearch, Greedy, Sampling, argmax,
                                        check_beam, check_sampling, is_beam,
                                        search)

__all__ = ["BeamSearch", "Beams", "Decoded", "Ensemble", "Greedy", "Sampling",
           "argmax", "check_beam", "check_decoder", "check_sampling",
           "decode", "decode_in_batches", "ensemble_params", "is_beam",
           "make_decoder", "make_inference_fns", "member_params",
           "pad_after_stop", "penalty", "search"]
