"""``Network``: network3's model class, on a fastmom backend.

A mini-batch flows ``Network._forward`` -> each layer's ``forward`` (a backend kernel
call writing into the layer's workspace) -> ``SoftmaxLayer`` cost, then
``Network._backward`` runs the layers in reverse, each writing its parameter
gradients into the flat gradient buffer; the optimizer then updates the flat
parameter buffer in one call.
"""
from __future__ import annotations

import io

import numpy as np

from . import _validate
from .backends import get_backend
from .layers import ConvPoolLayer, Layer, SoftmaxLayer, layer_from_spec
from .params import ParamBuffer

__all__ = ["Network"]

WEIGHT_INITS = ("network3", "fan_in")


class Network:
    """A feed-forward network of network3 layers ending in a :class:`SoftmaxLayer`.

    Parameters
    ----------
    layers : list of layers
        ``ConvPoolLayer``/``FullyConnectedLayer`` ..., then a ``SoftmaxLayer``. Each
        layer's input size must equal the previous layer's output size.
    mini_batch_size : int
        The training batch size; workspaces are sized for it once.
    device : str, optional
        ``"cpu"``, ``"reference"`` or ``"cuda"``; default ``$FASTMOM_DEVICE``, else
        ``"cpu"`` where its kernels are built, else ``"reference"``.
    dtype : numpy dtype, default float32
        float64 is available for gradient checks.
    seed : int, optional
        Seeds the weight initialisation, the dropout masks and (through
        :class:`~fastmom.Trainer`) the data order.
    weight_init : {"network3", "fan_in"}
        ``"network3"`` (default) reproduces network3 exactly: weights N(0, 1/n_out)
        where ``n_out`` is the layer's fan-*out* (``filters*kh*kw/prod(poolsize)`` for
        a conv layer), biases N(0, 1), softmax weights and biases zero. ``"fan_in"``
        uses the fan-in instead (``C*kh*kw``, ``n_in``): the scaling network3 meant.

    Attributes
    ----------
    params : ParamViews
        ``[w0, b0, w1, b1, ...]``: a read-only sequence of writable views of the flat
        parameter buffer. Write into a view (``net.params[0][...] = w``) or assign
        ``net.layers[0].w = w`` (copied into the buffer, shape checked);
        ``net.params[0] = w`` is refused with a TypeError.
    seed_sequence : numpy.random.SeedSequence
        The root of every random stream of this network (``SeedSequence(seed)``); a
        checkpoint stores its entropy so that a reload rebuilds the same tree.
    data_seed_sequence : numpy.random.SeedSequence
        Its child that seeds the training data order (a :class:`~fastmom.Trainer`
        without a ``seed`` of its own uses it).
    dropout_rng
        The backend generator that draws the dropout masks.
    """

    def __init__(self, layers, mini_batch_size, device=None, dtype=np.float32, seed=None,
                 weight_init="network3"):
        self.layers = list(layers)
        self.mini_batch_size = _validate.positive_int("mini_batch_size", mini_batch_size)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        self.weight_init = weight_init
        self._check_layers()
        self.backend = get_backend(device)
        self.device = self.backend.name
        self.seed = seed
        self.seed_sequence = np.random.SeedSequence(seed)
        init_seq, dropout_seq, self.data_seed_sequence = self.seed_sequence.spawn(3)
        self.dropout_rng = self.backend.make_rng(dropout_seq)

        self.flat = ParamBuffer([layer.param_shapes() for layer in self.layers], self.dtype, self.backend)
        self.params = self.flat.params
        init_rng = np.random.default_rng(init_seq)
        for i, layer in enumerate(self.layers):
            w0, b0 = layer.init_params(init_rng, weight_init)
            w, b = self.params[2 * i], self.params[2 * i + 1]
            w[...] = self.backend.asarray(w0, self.dtype)
            b[...] = self.backend.asarray(b0, self.dtype)
            layer.bind(self.backend, w, b, self.flat.grads[2 * i], self.flat.grads[2 * i + 1],
                       self.mini_batch_size, self.dtype, needs_dx=i > 0, rng=self.dropout_rng)

    def _check_layers(self):
        if not self.layers:
            raise ValueError("layers must not be empty")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] is not a fastmom layer: {layer!r}")
            if layer.backend is not None:
                raise ValueError(f"layers[{i}] already belongs to a Network; build new layer objects")
        if not isinstance(self.layers[-1], SoftmaxLayer):
            raise ValueError("the last layer must be a SoftmaxLayer")
        for i, layer in enumerate(self.layers):
            if isinstance(layer, ConvPoolLayer) and layer.image_shape[0] != self.mini_batch_size:
                raise ValueError(
                    f"layers[{i}].image_shape[0] is {layer.image_shape[0]} but mini_batch_size "
                    f"is {self.mini_batch_size}")
            if i == 0:
                continue
            prev = self.layers[i - 1]
            if isinstance(layer, ConvPoolLayer) and layer.in_shape != prev.out_shape:
                raise ValueError(f"layers[{i}] expects input {layer.in_shape} but layers[{i - 1}] "
                                 f"outputs {prev.out_shape}")
            if layer.n_in != prev.n_out:
                raise ValueError(f"layers[{i}] has n_in={layer.n_in} but layers[{i - 1}] outputs "
                                 f"{prev.n_out} values per image")

    # -- properties --------------------------------------------------------------------

    @property
    def n_in(self):
        return self.layers[0].n_in

    @property
    def n_out(self):
        return self.layers[-1].n_out

    def __repr__(self):
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        return (f"Network([\n    {inner}],\n    mini_batch_size={self.mini_batch_size}, "
                f"device={self.device!r}, dtype={self.dtype.name})")

    def summary_rows(self):
        """One dict per layer: ``layer`` (its index), ``type``, ``output_shape`` (per
        image), ``params`` and ``flops`` (forward FLOPs per image: 2 per multiply-add
        of the convolution or matrix product; pooling, bias and activations not
        counted)."""
        return [{"layer": i, "type": type(layer).__name__, "output_shape": tuple(layer.out_shape),
                 "params": layer.n_params(), "flops": layer.flops_per_image()}
                for i, layer in enumerate(self.layers)]

    def summary(self):
        """A table of the layers (:meth:`summary_rows`) with the totals, as a string.

        What ``fastmom summary --net NAME`` prints. The FLOPs are the forward pass's
        per image (training costs about three times as much).
        """
        rows = self.summary_rows()
        first = self.layers[0]
        lines = [f"Network: input {tuple(getattr(first, 'in_shape', (first.n_in,)))}, "
                 f"mini_batch_size={self.mini_batch_size}, device={self.device}, dtype={self.dtype.name}",
                 f"{'#':>2}  {'layer':<20} {'output shape':<16} {'params':>12} {'FLOPs/image':>14}"]
        for r in rows:
            lines.append(f"{r['layer']:>2}  {r['type']:<20} {str(r['output_shape']):<16} "
                         f"{r['params']:>12,} {r['flops']:>14,}")
        lines.append(f"{'':>2}  {'total':<20} {'':<16} {sum(r['params'] for r in rows):>12,} "
                     f"{sum(r['flops'] for r in rows):>14,}")
        return "\n".join(lines)

    # -- input validation (the one place for the API's data checks) --------------------

    def prepare_inputs(self, x, name="x"):
        """Validate images and return them as a contiguous ``(N, n_in)`` device array.

        Every entry point (:meth:`forward`, :meth:`accuracy`, :meth:`SGD`,
        ``Trainer.fit``...) passes its images through here. ``uint8`` images (pixels
        0-255) are divided by 255 in float32, exactly as :mod:`fastmom.data`'s loaders
        scale them, so raw 8-bit images and loaded ones give the same results. Other
        dtypes are used as they are (an int64 array of 0-255 values is *not* scaled).
        """
        xp = self.backend.xp
        x = _as_array(x, name)
        shape = tuple(x.shape)
        if len(shape) == 2 and shape[1] == self.n_in:
            pass
        elif len(shape) >= 2 and int(np.prod(shape[1:])) == self.n_in and shape[1:] == tuple(
                getattr(self.layers[0], "in_shape", ())):
            x = x.reshape(shape[0], self.n_in)
        else:
            raise ValueError(f"{name} must have shape (N, {self.n_in}) for the first layer, got {shape}")
        if shape[0] == 0:
            raise ValueError(f"{name} is empty")
        kind = np.dtype(x.dtype).kind
        if kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        if np.dtype(x.dtype) == np.uint8:
            x = self.backend.asarray(x, np.float32)  # a new array: scaled in place
            x /= np.float32(255.0)
        with np.errstate(over="ignore"):  # values beyond float32 become inf: refused just below
            x = self.backend.asarray(x, self.dtype)
        if not bool(xp.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return x

    def prepare_labels(self, y, n, name="labels y"):
        """Validate labels and return them as an int64 device array of length ``n``."""
        y = _as_array(y, name)
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
        if np.dtype(y.dtype).kind not in "iu":
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        y = self.backend.asarray(y, np.int64)
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self.n_out:
            raise ValueError(f"{name} must be in [0, {self.n_out}), got values in [{lo}, {hi}]")
        return y

    def prepare_data(self, data, name="data"):
        """Validate an ``(x, y)`` pair once and move it to the device."""
        try:
            x, y = data
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a pair (x, y)") from None
        x = self.prepare_inputs(x, f"{name} images")
        return x, self.prepare_labels(y, x.shape[0], f"{name} labels")

    def _batch(self, x, name="x"):
        n = x.shape[0]
        if n > self.mini_batch_size:
            raise ValueError(f"{name} has {n} rows, more than mini_batch_size={self.mini_batch_size}")

    # -- passes (no validation: callers pass prepared arrays) --------------------------

    def _forward(self, x, train, labels=None):
        a = x
        for layer in self.layers[:-1]:
            a = layer.forward(a, train)
        return self.layers[-1].forward(a, train, labels)

    #: ``gradient_ready(i)``, if set, is called right after layer ``i``'s backward has
    #: written its gradients (``flat.grads[2*i]`` and ``[2*i+1]``), layers in reverse
    #: order, so that work on them (data parallelism's all-reduce) can start while the
    #: layers below are still being differentiated. None: nothing is called.
    gradient_ready = None

    def _backward(self):
        ready, last = self.gradient_ready, len(self.layers) - 1
        d = self.layers[last].backward()
        if ready is not None:
            ready(last)
        for i in range(last - 1, -1, -1):
            d = self.layers[i].backward(d)
            if ready is not None:
                ready(i)

    def train_step(self, x, y):
        """Forward and backward on a prepared mini-batch; the gradients land in
        ``self.flat.grad``. Returns the mean NLL (a backend scalar)."""
        _, cost, _ = self._forward(x, True, y)
        self._backward()
        return cost

    # -- public inference API ----------------------------------------------------------

    def forward(self, x):
        """Softmax probabilities ``(N, n_out)`` in inference mode (any N)."""
        x = self.prepare_inputs(x)
        out = self.backend.empty((x.shape[0], self.n_out), self.dtype)
        for i in range(0, x.shape[0], self.mini_batch_size):
            probs, _, _ = self._forward(x[i:i + self.mini_batch_size], False)
            out[i:i + self.mini_batch_size] = probs
        return out

    def predict(self, x):
        """Predicted labels (argmax of :meth:`forward`)."""
        return self.forward(x).argmax(axis=1)

    def accuracy(self, x, y):
        """Fraction of the images classified correctly (all of them, in inference mode)."""
        return self.evaluate(x, y)

    def evaluate(self, x, y, drop_last=False):
        """Accuracy in inference mode.

        Parameters
        ----------
        x, y : arrays
            Images and labels (validated as by :meth:`prepare_data`; already prepared
            device arrays pass without a copy).
        drop_last : bool, default False
            network3's measure: the mean over mini-batches, the last partial one
            dropped. Otherwise every image counts.
        """
        x = self.prepare_inputs(x)
        y = self.prepare_labels(y, x.shape[0])
        n = self.evaluated_rows(x.shape[0], drop_last)
        return self.count_correct(x[:n], y[:n]) / n

    def evaluated_rows(self, n, drop_last):
        """How many of ``n`` images an accuracy counts: all of them, or with ``drop_last``
        (network3's measure) the whole mini-batches. ValueError when that is none."""
        bs = self.mini_batch_size
        rows = (n // bs) * bs if drop_last else n
        if rows == 0:
            raise ValueError(f"need at least mini_batch_size={bs} images to measure accuracy")
        return rows

    def count_correct(self, x, y):
        """How many of the prepared images ``x`` (labels ``y``, see :meth:`prepare_data`)
        are classified correctly in inference mode, in mini-batches from the first row
        (what :meth:`evaluate` and a data-parallel trainer's share of it count)."""
        bs, correct = self.mini_batch_size, 0
        for i in range(0, x.shape[0], bs):
            _, _, c = self._forward(x[i:i + bs], False, y[i:i + bs])
            correct = correct + c
        return int(correct)

    def cost_and_gradients(self, x, y, lmbda=0.0, num_training_batches=1):
        """network3's training cost on one batch and its gradients (no update).

        The cost is the mean negative log-likelihood plus
        ``0.5 * lmbda * sum(||w||^2) / num_training_batches`` (weights only). The
        forward pass is in training mode: dropout masks are drawn from
        ``self.dropout_rng``.

        Returns
        -------
        cost : float
        grads : list of arrays
            Copies, in ``params`` order.
        """
        x = self.prepare_inputs(x)
        y = self.prepare_labels(y, x.shape[0])
        self._batch(x)
        lmbda = float(lmbda)
        ntb = _validate.positive_int("num_training_batches", num_training_batches)
        if not (lmbda >= 0 and np.isfinite(lmbda)):
            raise ValueError(f"lmbda must be a finite number >= 0, got {lmbda!r}")
        cost = float(self.train_step(x, y))
        decay = lmbda / ntb
        if lmbda:
            cost += 0.5 * decay * self.backend.sum_squares(self.flat.weights())
        grads = [g.copy() for g in self.flat.grads]
        if lmbda:
            for i in range(0, len(grads), 2):
                grads[i] += self.dtype.type(decay) * self.params[i]
        return cost, grads

    def l2_cost(self, lmbda, num_training_batches):
        """network3's regularisation term ``0.5*lmbda*sum(||w||^2)/num_training_batches``."""
        if not lmbda:
            return 0.0
        return 0.5 * lmbda * self.backend.sum_squares(self.flat.weights()) / num_training_batches

    # -- description and persistence ------------------------------------------------

    def spec(self):
        """Everything but the parameter values needed to rebuild this network: a
        JSON-able dict (what a saved file stores as ``network``)."""
        return {
            "layers": [layer.spec() for layer in self.layers],
            "mini_batch_size": self.mini_batch_size,
            "dtype": self.dtype.name,
            "device": self.device,
            "seed_entropy": self.seed_sequence.entropy,
            "weight_init": self.weight_init,
            "n_params": int(self.flat.size),
            "dropout_rng": self.backend.rng_state(self.dropout_rng),
        }

    @classmethod
    def from_spec(cls, spec, params, device=None, dtype=None, source="spec", mini_batch_size=None):
        """Rebuild a network from :meth:`spec` output and its flat parameters (a host
        array); ``device``/``dtype``/``mini_batch_size`` override the stored ones.
        ValueError names ``source`` when the description is invalid."""
        try:
            layers = [layer_from_spec(ls, source, mini_batch_size) for ls in spec["layers"]]
            mbs = spec["mini_batch_size"] if mini_batch_size is None else mini_batch_size
            net = cls(layers, mbs, device=spec["device"] if device is None else device,
                      dtype=spec["dtype"] if dtype is None else dtype, seed=spec["seed_entropy"],
                      weight_init=spec["weight_init"])
        except (KeyError, TypeError, ValueError) as exc:
            # a DeviceError (RuntimeError) for an unavailable device passes through unchanged
            raise ValueError(f"{source}: cannot rebuild the network ({type(exc).__name__}: {exc})") from exc
        net.load_state(spec, params, source)
        return net

    def same_architecture(self, spec):
        """Whether ``spec`` (from :meth:`spec`) describes this network's layers and
        mini-batch size."""
        return (spec.get("layers") == [layer.spec() for layer in self.layers]
                and spec.get("mini_batch_size") == self.mini_batch_size)

    def load_state(self, spec, params, source="spec"):
        """Copy stored flat parameters (cast to ``dtype``) and the dropout generator's
        state from ``spec`` into this network."""
        if params.ndim != 1 or params.shape[0] != self.flat.size:
            raise ValueError(f"{source}: params has shape {params.shape}, expected ({self.flat.size},)")
        self.flat.data[...] = self.backend.asarray(params, self.dtype)
        try:
            self.backend.set_rng_state(self.dropout_rng, spec["dropout_rng"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: invalid dropout RNG state ({exc})") from exc

    def save(self, path, overwrite=False):
        """Write the architecture, parameters and dropout RNG state to ``path``.

        The file is a pickle-free ``.npz`` (see :mod:`fastmom.checkpoint`), written
        atomically: an interrupted save leaves any previous file at ``path`` intact.
        It gets the mode a plain ``open`` gives (``0o666`` less the umask).

        Parameters
        ----------
        path : str, path-like or binary file object
        overwrite : bool, default False
            An existing file you can write is replaced, as by ``open(path, "wb")``;
            a read-only one (no write permission bit) only with ``overwrite=True``.

        Raises
        ------
        ValueError
            Writing nothing, if a parameter is NaN or infinite.
        OSError
            Naming ``path``: a read-only file there (``PermissionError``, unless
            ``overwrite``), a missing or unwritable directory, a full disk.
        """
        params = self.backend.to_numpy(self.flat.data)
        if not np.isfinite(params).all():
            raise ValueError(f"{path}: refusing to save a network whose parameters are not finite")
        return self._write(path, params, overwrite)

    def _write(self, path, params, overwrite=False):
        from . import checkpoint  # the file format: a leaf module that knows no Network
        return checkpoint.write_checkpoint(path, {"network": self.spec()}, {"params": params}, overwrite)

    def __reduce__(self):
        """``pickle`` and ``copy.deepcopy`` (and ``copy.copy``) go through the ``.npz``
        document :meth:`save` writes, in memory: the copy is an independent network
        (its own buffers) with equal parameters, the same device, dtype and seed, and
        the dropout generator's state. Non-finite parameters are copied as they are."""
        buf = io.BytesIO()
        self._write(buf, self.backend.to_numpy(self.flat.data))
        return _network_from_npz_bytes, (type(self), buf.getvalue())

    @classmethod
    def load(cls, path, device=None, dtype=None, mini_batch_size=None):
        """Rebuild a network saved by :meth:`save` or by a ``Trainer`` checkpoint.

        Parameters
        ----------
        path : str, path-like or binary file object
        device : str, optional
            Default: the device it was saved from.
        dtype : numpy dtype, optional
            Default: the stored dtype; parameters are cast to it.
        mini_batch_size : int, optional
            Default: the stored one. Another size rebuilds the layers for it (a
            ``ConvPoolLayer``'s ``image_shape`` carries the batch); the parameters are
            the same. (A trainer checkpoint resumes only into its own batch size.)

        Raises
        ------
        fastmom.checkpoint.CheckpointError
            Naming ``path`` when it is missing, corrupt, truncated, of another
            format version, or not a fastmom file (a pickle is refused, never loaded).
        """
        from . import checkpoint
        if mini_batch_size is not None:
            _validate.positive_int("mini_batch_size", mini_batch_size)
        return checkpoint.load_network(path, device=device, dtype=dtype, network_type=cls,
                                       mini_batch_size=mini_batch_size)

    # -- training ----------------------------------------------------------------------

    def SGD(self, training_data, epochs, mini_batch_size, eta, validation_data, test_data,
            lmbda=0.0, momentum=0.0, nesterov=False):
        """Train with mini-batch (momentum) SGD exactly as network3's ``Network.SGD``.

        network3's cost, batching (the last partial mini-batch dropped, no shuffling),
        accuracy (mean over mini-batches), ``>=`` rule for the best validation epoch
        and printed lines; ``momentum=0`` (the default) is network3's plain SGD.
        ``momentum`` adds the classical update ``v = momentum*v - eta*grad;
        p = p + v`` with ``v`` starting at zero (``nesterov=True`` for Nesterov's).

        Returns
        -------
        History
            One record per epoch (training cost, validation and test accuracy,
            seconds, images per second).
        """
        from .train import Trainer  # the loop lives in train/, which never imports network
        if int(mini_batch_size) != self.mini_batch_size:
            raise ValueError(f"mini_batch_size={mini_batch_size} differs from the network's "
                             f"{self.mini_batch_size}")
        trainer = Trainer(self, eta=eta, momentum=momentum, nesterov=nesterov, lmbda=lmbda,
                          shuffle=False, network3_output=True, progress=False)
        return trainer.fit(training_data, epochs, validation_data, test_data)


def _network_from_npz_bytes(cls, data):
    """Unpickle a network: the inverse of :meth:`Network.__reduce__`."""
    return cls.load(io.BytesIO(data))


def _as_array(a, name):
    """``a`` if it is an array with a NumPy dtype (NumPy, CuPy), else ``np.asarray(a)``
    (lists, CPU torch tensors, ...); TypeError naming ``name`` when that fails."""
    if hasattr(a, "shape") and hasattr(a, "ndim"):
        try:
            np.dtype(a.dtype)
            return a
        except TypeError:
            pass
    try:
        return np.asarray(a)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be an array of real numbers, got {type(a).__name__} ({exc})") from None

