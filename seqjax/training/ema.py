"""An exponential moving average of the parameters, as one hook."""

import jax
import jax.numpy as jnp

from seqjax.training.hooks import Hook


def _average(weights, ema, params):
  """``decay * ema + (1 - decay) * params``, ``weights`` the two factors."""
  decay, rest = weights
  return jax.tree.map(
      lambda e, p: decay.astype(e.dtype) * e + rest.astype(p.dtype) * p,
      ema, params)


class EMA(Hook):
  """``ema = decay * ema + (1 - decay) * params`` after every step, from
  ``params`` (a checkpoint's average, to resume it) or else the parameters
  the run starts with; at each epoch end ``fn(state, epoch)`` (say the
  task's evaluation) on the state with the averaged parameters, its dict
  logged with keys prefixed ``ema_``. The average goes into every
  checkpoint the loop saves (``loop.save_fields["ema"]``), so a resumed run
  continues it exactly, and into ``stats.ema_params`` at the end. A
  boundary at every step makes each train call one step long."""

  def __init__(self, decay: float, fn=None, params=None):
    self.decay, self.fn, self.initial = decay, fn, params
    # Inputs, not constants, so another decay is the same program; 1 - decay
    # in double precision, as the constant it replaces was.
    self._weights = (jnp.float32(decay), jnp.float32(1 - decay))
    self._update = jax.jit(_average)

  def begin(self, loop):
    if self.initial is None:
      self.params = jax.tree.map(lambda p: p.copy(), loop.state.params)
    else:  # placed as the parameters are (one device, or replicated)
      self.params = jax.tree.map(lambda e, p: jax.device_put(e, p.sharding),
                                 self.initial, loop.state.params)
    loop.save_fields["ema"] = self.params

  def next_boundary(self, loop):
    return loop.step + 1

  def after_call(self, loop):
    self.params = self._update(self._weights, self.params,
                               loop.state.params)
    loop.save_fields["ema"] = self.params
    if loop.epoch_end and self.fn is not None:
      epoch = loop.step // loop.spe
      extra = self.fn(loop.state.replace(params=self.params), epoch) or {}
      loop.write({"step": loop.step, "epoch": epoch, "eval": True,
                  **{f"ema_{k}": v for k, v in extra.items()}})

  def end(self, loop):
    loop.stats.ema_params = self.params
