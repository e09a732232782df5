"""An exponential moving average of the parameters, as one hook."""

import jax

from seqjax.training.hooks import Hook


class EMA(Hook):
  """``ema = decay * ema + (1 - decay) * params`` after every step, from the
  parameters the run starts with; at each epoch end ``fn(state, epoch)``
  (say the task's evaluation) on the state with the averaged parameters,
  its dict logged with keys prefixed ``ema_``. The average is the hook's
  own: a resumed run starts it again from the parameters it resumes with.
  A boundary at every step makes each train call one step long."""

  def __init__(self, decay: float, fn=None):
    self.decay, self.fn = decay, fn
    self._update = jax.jit(lambda ema, params: jax.tree.map(
        lambda e, p: decay * e + (1 - decay) * p, ema, params))

  def begin(self, loop):
    self.params = jax.tree.map(lambda p: p.copy(), loop.state.params)

  def next_boundary(self, loop):
    return loop.step + 1

  def after_call(self, loop):
    self.params = self._update(self.params, loop.state.params)
    if loop.epoch_end and self.fn is not None:
      epoch = loop.step // loop.spe
      extra = self.fn(loop.state.replace(params=self.params), epoch) or {}
      loop.write({"step": loop.step, "epoch": epoch, "eval": True,
                  **{f"ema_{k}": v for k, v in extra.items()}})
