"""Independent NumPy references: Keras' LSTM and GRU equations, step by step,
with explicit one-hot inputs (the thing the library never builds)."""

import numpy as np


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def one_hot(ids, n):
  return np.eye(n, dtype=np.float64)[ids]


def lstm_numpy(params, x_BTF, h0=None, c0=None, mask_BT=None):
  """Keras LSTM: gates i, f, c, o; returns outputs (B, T, H), h, c."""
  W = np.asarray(params["kernel"], np.float64)
  U = np.asarray(params["recurrent_kernel"], np.float64)
  b = np.asarray(params["bias"], np.float64)
  B, T, _ = x_BTF.shape
  H = U.shape[0]
  h = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64)
  c = np.zeros((B, H)) if c0 is None else np.asarray(c0, np.float64)
  outs = []
  for t in range(T):
    xt = x_BTF[:, t]
    i = sigmoid(xt @ W[:, :H] + h @ U[:, :H] + b[:H])
    f = sigmoid(xt @ W[:, H:2 * H] + h @ U[:, H:2 * H] + b[H:2 * H])
    g = np.tanh(xt @ W[:, 2 * H:3 * H] + h @ U[:, 2 * H:3 * H] + b[2 * H:3 * H])
    o = sigmoid(xt @ W[:, 3 * H:] + h @ U[:, 3 * H:] + b[3 * H:])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    if mask_BT is not None:
      m = mask_BT[:, t][:, None]
      c_new = np.where(m, c_new, c)
      h_new = np.where(m, h_new, h)
    h, c = h_new, c_new
    outs.append(h)
  return np.stack(outs, 1), h, c


def gru_numpy(params, x_BTF, h0=None, mask_BT=None):
  """Keras GRU, reset_after=True: gates z, r, n."""
  W = np.asarray(params["kernel"], np.float64)
  U = np.asarray(params["recurrent_kernel"], np.float64)
  b_in, b_rec = np.asarray(params["bias"], np.float64)
  B, T, _ = x_BTF.shape
  H = U.shape[0]
  h = np.zeros((B, H)) if h0 is None else np.asarray(h0, np.float64)
  outs = []
  for t in range(T):
    xt = x_BTF[:, t]
    xz = xt @ W[:, :H] + b_in[:H]
    xr = xt @ W[:, H:2 * H] + b_in[H:2 * H]
    xn = xt @ W[:, 2 * H:] + b_in[2 * H:]
    hz = h @ U[:, :H] + b_rec[:H]
    hr = h @ U[:, H:2 * H] + b_rec[H:2 * H]
    hn = h @ U[:, 2 * H:] + b_rec[2 * H:]
    z = sigmoid(xz + hz)
    r = sigmoid(xr + hr)
    n = np.tanh(xn + r * hn)
    h_new = z * h + (1 - z) * n
    if mask_BT is not None:
      h_new = np.where(mask_BT[:, t][:, None], h_new, h)
    h = h_new
    outs.append(h)
  return np.stack(outs, 1), h


def dense_numpy(params, x):
  return x @ np.asarray(params["kernel"], np.float64) + np.asarray(
      params["bias"], np.float64)
